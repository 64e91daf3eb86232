"""
saltcd: the outputter of the ``deploy`` runner's functions.

They choose it themselves when a person runs them (``salt-run deploy.status``):
tables and one-line summaries instead of Salt's nested dump. ``--out=json`` or
``--out=yaml`` bypass it and give the full return. Colours follow Salt: only on
a TTY, never with ``--no-color``. The formatting lives in ``saltcd.present.views``.
"""

from saltcd.present import views

__virtualname__ = "saltcd"


def __virtual__():
    return __virtualname__


def output(data, **kwargs):  # pylint: disable=unused-argument
    """The text of one of saltcd's views, else Salt's nested outputter."""
    paint = views.Paint(__opts__.get("color", False))
    text = views.render(data, paint)
    if text is not None:
        return text
    import salt.output  # pylint: disable=import-outside-toplevel

    # Not one of saltcd's views, but it may still carry text minions reported.
    return salt.output.out_format(views.scrub(data), "nested", __opts__)
