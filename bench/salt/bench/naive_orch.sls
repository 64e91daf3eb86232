{#- salt-run state.orchestrate bench.naive_orch pillar='{"bench": {...}}':
    the naive rollout, in Salt's own batches. -#}
bench-naive-rollout:
  salt.state:
    - tgt: {{ pillar['bench']['targets']|json }}
    - tgt_type: list
    - sls: bench.naive
    - batch: {{ pillar['bench']['batch']|json }}
    - pillar: {{ {'bench': pillar['bench']}|json }}
