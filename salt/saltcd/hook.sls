{#- Run one release hook (pillar `saltcd:hook`: before or after) as a one-off
    container of the pinned image, with the app's environment and options
    (volumes, networks, ...) and the hook's command; exit 0 passes. Applied by
    the saltcd runner on one minion of the environment (saltcd.rollout), with
    the deploy data served through the `saltcd` ext_pillar meanwhile. -#}
{%- set hook = salt['pillar.get']('saltcd:hook') %}
{%- from "saltcd/map.jinja" import deploy, login_state with context %}
{%- if not deploy.get('image') or hook not in ['before', 'after'] or not (deploy.get('hooks') or {}).get(hook) %}
{{ raise('saltcd.hook needs pillar saltcd:hook and the deploy data of a rollout with that hook; it is run by the saltcd runner') }}
{%- endif %}

{{ login_state('hook', 'saltcd-hook-docker_image-present') }}

saltcd-hook-docker_image-present:
  docker_image.present:
    - name: {{ deploy.image|json }}

saltcd-hook-saltcd_release-hook:
  saltcd_release.hook:
    - name: {{ (deploy.container ~ '-hook-' ~ hook)|json }}
    - image: {{ deploy.image|json }}
    - command: {{ deploy.hooks[hook]|json }}
    - environment: {{ deploy.environment|json }}
    - options: {{ deploy.options|json }}
    - timeout: {{ deploy.hooks.timeout|json }}
    - require:
      - docker_image: saltcd-hook-docker_image-present
