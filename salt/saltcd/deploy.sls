{#- Deploy one pinned image (`repo@sha256:...`) and wait until it is healthy:
    the app's container, or each of its roles in turn (a role is replaced only
    once the one before it passed its health gate).
    Applied by the saltcd runner with pillar `saltcd` (see config.Deployment.pillar). -#}
{%- from "saltcd/map.jinja" import deploy, roles, health_url, registry, login, login_state with context %}
{%- if not deploy.get('image') %}
{{ raise('saltcd.deploy needs pillar saltcd:image; apply it through the saltcd runner') }}
{%- endif %}


# `docker login` where this minion has credentials (map.jinja's login_state).
{{ login_state('deploy', 'saltcd-deploy-docker_image-present') }}

# Pull before anything is stopped: if the pull fails the old containers keep running.
saltcd-deploy-docker_image-present:
  docker_image.present:
    - name: {{ deploy.image|json }}
{#- What each role's replacement waits for (a namespace: a loop's `set` stays in its turn). #}
{%- set after = namespace(state={'docker_image': 'saltcd-deploy-docker_image-present'}) %}

{#- First, the app's containers this minion no longer runs (a role moved or
    removed, the app's own once it has roles): they may hold a port a role
    needs. Only what saltcd made goes (saltcd_release.gone). #}
{%- for name in deploy.get('gone', []) %}

saltcd-deploy-saltcd_release-gone-{{ name }}:
  saltcd_release.gone:
    - name: {{ name|json }}
    - stop_timeout: {{ deploy.stop_timeout|json }}
    - require:
      - {{ after.state|json }}
{%- set after.state = {'saltcd_release': 'saltcd-deploy-saltcd_release-gone-' ~ name} %}
{%- endfor %}

{%- for role in roles %}
{#- State ids: the app's own as they always were; a role's carry its name. #}
{%- set suffix = ('-' ~ role.role) if role.get('role') else '' %}
{%- if role.strategy == 'start-first' %}

# Start-first: the new container starts beside the old one on a private port,
# passes the health gate (settle included), then the host's HAProxy switches to
# it and the old one drains and goes (saltcd_release, saltcd_haproxy).
saltcd-deploy-saltcd_release-start_first{{ suffix }}:
  saltcd_release.start_first:
    - name: {{ role.container|json }}
    - image: {{ deploy.image|json }}
    - ports: {{ role.ports|json }}
    - environment: {{ role.environment|json }}
    - restart_policy: {{ role.restart_policy|json }}
    - stop_timeout: {{ role.stop_timeout|json }}
    - options: {{ role.options|json }}
    - drain: {{ role.drain|json }}
    - health: {{ role.health|json }}
    - require:
      - {{ after.state|json }}
{%- set replaced = {'saltcd_release': 'saltcd-deploy-saltcd_release-start_first' ~ suffix} %}
{#- The public URL, through HAProxy: the new container already passed its
    settle privately before the switch, so this only confirms the route (no
    second settle, which would add `settle` seconds per minion and see nothing new). #}
{%- set public_settle = 0 %}
{%- else %}

# Stop-first: replaced only when it runs another image or spec (create new, remove old, start new).
saltcd-deploy-docker_container-running{{ suffix }}:
  docker_container.running:
    - name: {{ role.container|json }}
    - image: {{ deploy.image|json }}
    - port_bindings: {{ role.ports|json }}
    - environment: {{ role.environment|json }}
    - restart_policy: {{ role.restart_policy|json }}
    - shutdown_timeout: {{ role.stop_timeout|json }}
{#- The role's `options`, as docker_container.running takes them (saltcd's spec
    label among the labels: a container on an older spec is replaced). #}
{%- for option, value in role.options|dictsort %}
    - {{ option }}: {{ value|json }}
{%- endfor %}
    - require:
      - {{ after.state|json }}
{%- set replaced = {'docker_container': 'saltcd-deploy-docker_container-running' ~ suffix} %}
{%- set public_settle = role.health.settle %}
{%- endif %}

saltcd-deploy-saltcd_health-passing{{ suffix }}:
  saltcd_health.passing:
    - name: {{ health_url(role)|json }}
    - container: {{ role.container|json }}
    - timeout: {{ role.health.timeout|json }}
    - interval: {{ role.health.interval|json }}
    - settle: {{ public_settle|json }}
    - status: {{ role.health.status|json }}
    - check: {{ role.health.check|json }}
    - command: {{ role.health.command|json }}
    - require:
      - {{ replaced|json }}
{#- The next role waits for this one to be healthy. #}
{%- set after.state = {'saltcd_health': 'saltcd-deploy-saltcd_health-passing' ~ suffix} %}
{%- endfor %}
