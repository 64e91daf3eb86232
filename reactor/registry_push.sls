{#- A registry notification reached the webhook. One hand-off, no logic: the
    runner authenticates, parses, persists and starts the rollout in the
    background. `data|yaml`, not `|json`: the webhook engine's body is bytes,
    which YAML carries (!!binary) and JSON cannot. -#}
saltcd-registry_push-runner-deploy.accept:
  runner.deploy.accept:
    - args:
      - tag: {{ tag|json }}
      - data: {{ data|yaml }}
