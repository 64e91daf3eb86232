{#- The operator's own deploy state (`apps.<app>.state`) and saltcd's health
    gate after it: applied by the saltcd runner to each batch instead of
    saltcd.deploy. The operator's SLS reads the release from
    `{% from "saltcd/map.jinja" import deploy, roles with context %}`
    (the pillar contract: docs/own-state.md); here each role's container must
    then pass its health check. -#}
{%- from "saltcd/map.jinja" import deploy, roles, health_url with context %}
{%- if not deploy.get('image') or not deploy.get('state') %}
{{ raise('saltcd.gate needs the deploy data of an app with `state:`; it is applied by the saltcd runner') }}
{%- endif %}

include:
  - {{ deploy.state }}

{%- for role in roles %}

saltcd-gate-saltcd_health-passing-{{ role.container }}:
  saltcd_health.passing:
    - name: {{ health_url(role)|json }}
    - container: {{ role.container|json }}
    - timeout: {{ role.health.timeout|json }}
    - interval: {{ role.health.interval|json }}
    - settle: {{ role.health.settle|json }}
    - status: {{ role.health.status|json }}
    - check: {{ role.health.check|json }}
    - command: {{ role.health.command|json }}
    - require:
      - sls: {{ deploy.state }}
{%- endfor %}
