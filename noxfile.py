"""The Salt matrix (`make test-matrix`): each supported Salt line in a virtualenv
of its own, on the Python its onedir ships, with the exact versions of
constraints/salt-<line>.txt (what the tests ran with; the package itself
declares ranges). The unit and functional tiers run on every line, the whole
suite (integration tier included) on the oldest and the newest.

    nox -s tests              # unit + functional, every line
    nox -s "tests(3006)"
    nox -s integration        # every tier, oldest and newest line

`make test` is the newest line's whole suite in .venv (no nox needed).
"""

import nox

# Salt line -> the Python its onedir build ships (3006 LTS and 3007: 3.10; 3008: 3.11).
LINES = {"3006": "3.10", "3007": "3.10", "3008": "3.11"}
OLDEST, NEWEST = min(LINES), max(LINES)
XDIST = ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]

nox.options.sessions = ["tests", "integration"]
nox.options.reuse_existing_virtualenvs = True


def _install(session, line):
    session.install("-c", f"constraints/salt-{line}.txt", "-e", ".[test]")
    session.run("python", "-c", "import salt.version, sys; print('Salt', salt.version.__version__, 'on', sys.version)")


@nox.session
@nox.parametrize("python,salt", [(python, line) for line, python in LINES.items()],
                 ids=list(LINES))
def tests(session, salt):
    """The unit and functional tiers on one Salt line."""
    _install(session, salt)
    session.run("pytest", *XDIST, "tests/unit", "tests/functional", "tests/bench", *session.posargs)


@nox.session
@nox.parametrize("python,salt", [(LINES[line], line) for line in (OLDEST, NEWEST)], ids=[OLDEST, NEWEST])
def integration(session, salt):
    """Every tier (the labs need root, dockerd and the Debian packages of
    scripts/bootstrap-system.sh) on the oldest and the newest Salt line."""
    _install(session, salt)
    session.run("pytest", *XDIST, "tests", *session.posargs)
