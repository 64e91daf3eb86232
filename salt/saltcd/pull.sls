{#- Pull one pinned image (`repo@sha256:...`) ahead of its batch: log in where
    this minion has credentials, pull, nothing else. No container is stopped or
    changed. Applied by the saltcd runner when a rollout starts (saltcd.rollout.prepull),
    with the same deploy data as saltcd.deploy (pillar `saltcd`, served through
    the `saltcd` ext_pillar while the pull runs). -#}
{%- from "saltcd/map.jinja" import deploy, login_state with context %}
{%- if not deploy.get('image') %}
{{ raise('saltcd.pull needs pillar saltcd:image; apply it through the saltcd runner') }}
{%- endif %}

{{ login_state('pull', 'saltcd-pull-docker_image-present') }}

saltcd-pull-docker_image-present:
  docker_image.present:
    - name: {{ deploy.image|json }}
