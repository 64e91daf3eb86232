{#- Deploy one pinned image (`repo@sha256:...`) and wait until it is healthy.
    Applied by the saltcd runner with pillar `saltcd` (see config.Deployment.pillar). -#}
{%- from "saltcd/map.jinja" import deploy, health_url, registry, login, login_state with context %}
{%- if not deploy.get('image') %}
{{ raise('saltcd.deploy needs pillar saltcd:image; apply it through the saltcd runner') }}
{%- endif %}


# `docker login` where this minion has credentials (map.jinja's login_state).
{{ login_state('deploy', 'saltcd-deploy-docker_image-present') }}

# Pull before anything is stopped: if the pull fails the old container keeps running.
saltcd-deploy-docker_image-present:
  docker_image.present:
    - name: {{ deploy.image|json }}

{%- if deploy.strategy == 'start-first' %}

# Start-first: the new container starts beside the old one on a private port,
# passes the health gate (settle included), then the host's HAProxy switches to
# it and the old one drains and goes (saltcd_release, saltcd_haproxy).
saltcd-deploy-saltcd_release-start_first:
  saltcd_release.start_first:
    - name: {{ deploy.container|json }}
    - image: {{ deploy.image|json }}
    - ports: {{ deploy.ports|json }}
    - environment: {{ deploy.environment|json }}
    - restart_policy: {{ deploy.restart_policy|json }}
    - stop_timeout: {{ deploy.stop_timeout|json }}
    - options: {{ deploy.options|json }}
    - drain: {{ deploy.drain|json }}
    - health: {{ deploy.health|json }}
    - require:
      - docker_image: saltcd-deploy-docker_image-present
{%- set replaced = {'saltcd_release': 'saltcd-deploy-saltcd_release-start_first'} %}
{#- The public URL, through HAProxy: the new container already passed its
    settle privately before the switch, so this only confirms the route (no
    second settle, which would add `settle` seconds per minion and see nothing new). #}
{%- set public_settle = 0 %}
{%- else %}

# Stop-first: replaced only when it runs another image (create new, remove old, start new).
saltcd-deploy-docker_container-running:
  docker_container.running:
    - name: {{ deploy.container|json }}
    - image: {{ deploy.image|json }}
    - port_bindings: {{ deploy.ports|json }}
    - environment: {{ deploy.environment|json }}
    - restart_policy: {{ deploy.restart_policy|json }}
    - shutdown_timeout: {{ deploy.stop_timeout|json }}
{#- The app's `options`, as docker_container.running takes them (saltcd's spec
    label among the labels: a container on an older spec is replaced). #}
{%- for option, value in deploy.options|dictsort %}
    - {{ option }}: {{ value|json }}
{%- endfor %}
    - require:
      - docker_image: saltcd-deploy-docker_image-present
{%- set replaced = {'docker_container': 'saltcd-deploy-docker_container-running'} %}
{%- set public_settle = deploy.health.settle %}
{%- endif %}

saltcd-deploy-saltcd_health-passing:
  saltcd_health.passing:
    - name: {{ health_url|json }}
    - container: {{ deploy.container|json }}
    - timeout: {{ deploy.health.timeout|json }}
    - interval: {{ deploy.health.interval|json }}
    - settle: {{ public_settle|json }}
    - status: {{ deploy.health.status|json }}
    - check: {{ deploy.health.check|json }}
    - command: {{ deploy.health.command|json }}
    - require:
      - {{ replaced|json }}
