{#- A webhook request reached /saltcd/<source>. One hand-off, no logic: the
    runner checks, parses, persists and starts the rollout in the background.
    Two tags come here:
    - saltcd/ingress/<source>, from the saltcd_webhook engine, which checked the
      source's credential at the door: body (text, capped), received, nonce and
      a MAC made with the master-local ingress key. No header is on the bus.
    - salt/netapi/hook/saltcd/<source>, from salt-api: header values travel on
      only as SHA-256 digests, because a runner reaction's arguments are
      published in its salt/run/<jid>/new event and kept in the job cache.
    `|yaml`, not `|json`: a body may be bytes (YAML's !!binary). -#}
saltcd-registry_push-runner-deploy.accept:
  runner.deploy.accept:
    - args:
      - tag: {{ tag|json }}
      - data: {{ {
          'body': data.get('body', ''),
          'received': data.get('received'),
          'nonce': data.get('nonce'),
          'mac': data.get('mac'),
          'header_names': data.get('headers', {}).keys()|list,
          'header_sha256': data.get('headers', {}).values()|map('string')|map('sha256')|list,
          'minion_fields': ['cmd', 'id']|select('in', data)|list,
        }|yaml }}
