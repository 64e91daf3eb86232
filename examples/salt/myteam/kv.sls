{#- An accessory the operator runs with their own state, not rolled by saltcd:
    a key-value service on the private network `shop-net`, where the app's
    roles reach it as `kv` (the sandbox demo's shop app). Pillar
    `myteam:kv_image` names the image. -#}
{%- set image = salt['pillar.get']('myteam:kv_image') %}
{%- if not image %}
{{ raise('myteam.kv needs pillar myteam:kv_image') }}
{%- endif %}
{%- set registry = image.split('/')[0] %}
{#- Published ports of containers on a user-defined network bind where the
    network says (dockerd's --ip covers only the default bridge): this host's
    address (grain saltcd:health_host) when it has one. #}
{%- set bind = salt['grains.get']('saltcd:health_host') %}

shop-net:
  docker_network.present:
{%- if bind %}
    - driver_opts: {"com.docker.network.bridge.host_binding_ipv4": {{ bind|json }}}
{%- endif %}

{%- if registry in salt['config.get']('docker-registries', {}) %}

myteam-kv-login:
  module.run:
    - docker.login:
      - {{ registry|json }}
    - require_in:
      - docker_image: myteam-kv-image
{%- endif %}

myteam-kv-image:
  docker_image.present:
    - name: {{ image|json }}

shop-kv:
  docker_container.running:
    - image: {{ image|json }}
    - binds: ["shop-kv-data:/data"]
    - networks:
      - shop-net:
        - aliases: [kv]
    - restart_policy: unless-stopped
    - require:
      - docker_network: shop-net
      - docker_image: myteam-kv-image
