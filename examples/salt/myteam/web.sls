{#- An operator's own deploy state, named by the app's `state: myteam.web`.
    saltcd applies it to each batch (and, with the previous image, to roll a
    failed batch back), then its own health gate (saltcd.gate). The release
    comes from saltcd's map.jinja: the pillar contract in docs/own-state.md. -#}
{%- from "saltcd/map.jinja" import deploy, roles with context %}

{#- Ports published from a user-defined network bind where the network says
    (dockerd's --ip covers only the default bridge): the address this host's
    published ports answer on (grain saltcd:health_host), when it has one. #}
{%- set bind = salt['grains.get']('saltcd:health_host') %}

myteam-web-network:
  docker_network.present:
    - name: myteam-net
{%- if bind %}
    - driver_opts: {"com.docker.network.bridge.host_binding_ipv4": {{ bind|json }}}
{%- endif %}

{%- for role in roles %}

myteam-web-{{ role.container }}:
  docker_container.running:
    - name: {{ role.container|json }}
    - image: {{ deploy.image|json }}
    - port_bindings: {{ role.ports|json }}
    - environment: {{ role.environment|json }}
    # The team's own choices: uploads in a named volume, the database on a
    # private network where the app answers as `web`.
    - binds: ["myteam-web-data:/data"]
    - networks:
      - myteam-net:
        - aliases: [web]
    # saltcd's label: a container on an older spec is out of date.
    - labels: {{ deploy.labels|json }}
    - require:
      - docker_network: myteam-web-network
{%- endfor %}
