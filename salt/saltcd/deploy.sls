{#- Deploy one pinned image (`repo@sha256:...`) and wait until it is healthy.
    Applied by the saltcd runner with pillar `saltcd` (see config.Deployment.pillar). -#}
{%- from "saltcd/map.jinja" import deploy, health_url, registry, login with context %}
{%- if not deploy.get('image') %}
{{ raise('saltcd.deploy needs pillar saltcd:image; apply it through the saltcd runner') }}
{%- endif %}

{%- if login.needed %}

# `docker login` with this minion's `docker-registries` credentials for the
# image's registry (dockermod runs the docker CLI quietly; config.json gets the
# auth, which the pull below reloads). Minions without credentials skip it.
saltcd-deploy-module-run:
  module.run:
    - docker.login:
      - {{ registry|json }}
    - require_in:
      - docker_image: saltcd-deploy-docker_image-present
{%- endif %}

# Pull before anything is stopped: if the pull fails the old container keeps running.
saltcd-deploy-docker_image-present:
  docker_image.present:
    - name: {{ deploy.image|json }}

# Replaced only when it runs another image (create new, remove old, start new).
saltcd-deploy-docker_container-running:
  docker_container.running:
    - name: {{ deploy.container|json }}
    - image: {{ deploy.image|json }}
    - port_bindings: {{ deploy.ports|json }}
    - environment: {{ deploy.environment|json }}
    - restart_policy: {{ deploy.restart_policy|json }}
    - shutdown_timeout: {{ deploy.stop_timeout|json }}
    - require:
      - docker_image: saltcd-deploy-docker_image-present

saltcd-deploy-saltcd_health-passing:
  saltcd_health.passing:
    - name: {{ health_url|json }}
    - container: {{ deploy.container|json }}
    - timeout: {{ deploy.health.timeout|json }}
    - interval: {{ deploy.health.interval|json }}
    - settle: {{ deploy.health.settle|json }}
    - status: {{ deploy.health.status|json }}
    - require:
      - docker_container: saltcd-deploy-docker_container-running
