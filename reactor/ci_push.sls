{#- A `saltcd/push`: `salt-call event.send saltcd/push "$(python -m saltcd.ci_push ...)"`
    from a CI minion arrives wrapped ({"id", "cmd": "_minion_event", "data": {...}});
    one put on the bus unwrapped (the master's own, or a minion's through the
    syndic path) is the payload itself. Both hand the same fields to the runner,
    which checks the signature and the time, refuses the unwrapped and minions
    not in ci_minions, then the nonce. One hand-off, no logic.
    The signature travels only as its SHA-256 (zero or one digest in a list): a
    runner reaction's arguments are published in salt/run/<jid>/new and kept in
    the job cache, and a signature there could be replayed within the window. -#}
{%- set push = [data.get('data'), data]|select('mapping')|first %}
saltcd-ci_push-runner-deploy.accept:
  runner.deploy.accept:
    - args:
      - tag: {{ tag|json }}
      - data: {{ {
          'id': data.get('id'),
          'cmd': data.get('cmd'),
          'data': {
            'repository': push.get('repository'),
            'tag': push.get('tag'),
            'digest': push.get('digest'),
            'timestamp': push.get('timestamp'),
            'nonce': push.get('nonce'),
            'signature_sha256': [push.get('signature')]|select('string')|map('sha256')|list,
          },
        }|yaml }}
