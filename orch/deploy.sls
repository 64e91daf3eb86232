{#- salt-run state.orchestrate orch.deploy pillar='{"app": "web", "env": "dev"}'
    The batching, health gate and rollback live in the runner; this SLS is the
    declarative entry point for operators who drive deployments by orchestration. -#}
saltcd-deploy-salt-runner-rollout:
  salt.runner:
    - name: deploy.rollout
    - app: {{ pillar['app']|json }}
    - env: {{ pillar['env']|json }}

saltcd-deploy-salt-runner-notify_failure:
  salt.runner:
    - name: event.send
    - tag: saltcd/orch/deploy/failed
    - data:
        app: {{ pillar['app']|json }}
        env: {{ pillar['env']|json }}
    - onfail:
      - salt: saltcd-deploy-salt-runner-rollout
