{#- salt-run state.orchestrate bench.naive_orch pillar='{"bench": {...}}':
    the naive rollout, in Salt's own batches. `docker.update_mine` (dockermod's
    default: true) is passed on, to compare with and without the mine refresh. -#}
bench-naive-rollout:
  salt.state:
    - tgt: {{ pillar['bench']['targets']|json }}
    - tgt_type: list
    - sls: bench.naive
    - batch: {{ pillar['bench']['batch']|json }}
    - pillar: {{ {'bench': pillar['bench'], 'docker.update_mine': pillar.get('docker.update_mine', True)}|json }}
