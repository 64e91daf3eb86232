{#- A webhook request reached /saltcd/<source>. One hand-off, no logic: the
    runner authenticates, parses, persists and starts the rollout in the
    background. Header values travel only as SHA-256 digests, because a
    runner reaction's arguments are published in its salt/run/<jid>/new event
    and kept in the job cache: a bearer token must not be among them.
    `|yaml`, not `|json`: the webhook engine's body is bytes (YAML's !!binary). -#}
saltcd-registry_push-runner-deploy.accept:
  runner.deploy.accept:
    - args:
      - tag: {{ tag|json }}
      - data: {{ {
          'body': data.get('body', ''),
          'header_names': data.get('headers', {}).keys()|list,
          'header_sha256': data.get('headers', {}).values()|map('string')|map('sha256')|list,
          'minion_fields': ['cmd', 'id']|select('in', data)|list,
        }|yaml }}
