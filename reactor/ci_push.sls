{#- `salt-call event.send saltcd/push '{"repository": ..., "tag": ..., "digest": ...}'`
    from a CI minion (or `salt-run event.send` on the master). One hand-off. -#}
saltcd-ci_push-runner-deploy.accept:
  runner.deploy.accept:
    - args:
      - tag: {{ tag|json }}
      - data: {{ data|yaml }}
