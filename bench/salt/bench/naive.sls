{#- What a Salt user writes today to redeploy a tag: re-pull it, run it, then
    wait for its health URL. No digest pinning, no records, no rollback.
    Pillar `bench` comes from bench/salt/bench/naive_orch.sls. -#}
{%- set b = pillar['bench'] %}
bench-naive-image:
  docker_image.present:
    - name: {{ b.image|json }}
    - force: True

bench-naive-container:
  docker_container.running:
    - name: {{ b.container|json }}
    - image: {{ b.image|json }}
    - port_bindings: {{ b.ports|json }}
    - environment: {{ b.environment|json }}
    - restart_policy: unless-stopped
    - shutdown_timeout: {{ b.stop_timeout|json }}
    - require:
      - docker_image: bench-naive-image

bench-naive-health:
  http.wait_for_successful_query:
    - name: {{ ('http://' ~ grains['saltcd']['health_host'] ~ ':' ~ b.port ~ b.path)|json }}
    - status: 200
    - wait_for: {{ b.timeout|json }}
    - request_interval: {{ b.interval|json }}
    - require:
      - docker_container: bench-naive-container
