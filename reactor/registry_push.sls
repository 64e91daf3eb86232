{#- A webhook request reached /saltcd/<source>. One hand-off, no logic: the
    runner checks, persists and starts the rollout in the background.
    Two tags come here:
    - saltcd/ingress/<source>, from the saltcd_webhook engine, which checked the
      source's address and credential and parsed the body at the door: only
      what saltcd uses of it travels on (pushes: repository, tag, digest, media
      type; ignored: reasons, bounded), with received, nonce and a MAC made
      with the master-local ingress key. No body, no header: `body` is empty.
    - salt/netapi/hook/saltcd/<source>, from salt-api (only if wired): Salt
      puts the raw body on the bus, so it is handed on; header values travel
      on only as SHA-256 digests, because a runner reaction's arguments are
      published in its salt/run/<jid>/new event and kept in the job cache.
      `pushes` and `ignored` are empty.
    `|yaml`, not `|json`: a body may be bytes (YAML's !!binary). -#}
saltcd-registry_push-runner-deploy.accept:
  runner.deploy.accept:
    - args:
      - tag: {{ tag|json }}
      - data: {{ {
          'pushes': data.get('pushes'),
          'ignored': data.get('ignored'),
          'received': data.get('received'),
          'nonce': data.get('nonce'),
          'mac': data.get('mac'),
          'body': data.get('body'),
          'header_names': data.get('headers', {}).keys()|list,
          'header_sha256': data.get('headers', {}).values()|map('string')|map('sha256')|list,
          'minion_fields': ['cmd', 'id']|select('in', data)|list,
        }|yaml }}
