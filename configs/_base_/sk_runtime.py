# What the SK configs here share. A config lists this file in its `_base_` beside its detector's
# base and uses the values as `{{_base_.name}}`, e.g.
#   optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.sk_gate_custom_keys}}))
#   default_hooks = dict(checkpoint={{_base_.sk_checkpoint_hook}})
# They are top-level helper variables (as MMDetection's `backend_args`), not `optim_wrapper` or
# `default_hooks` themselves: MMEngine refuses a key that two bases of one config both define.

# For `optim_wrapper.paramwise_cfg.custom_keys` of a config with gated SK (gate=True). The gates
# start at 0 and must move for SK to be used: no weight decay pulling them back to the
# identity, 10x the learning rate (chosen by the pilot of tools/analysis_tools/sk_study.py:
# after 80 fine-tuning iterations the gates reached 0.002 with the base settings, 0.02 so).
sk_gate_custom_keys = {'.gate': dict(decay_mult=0.0, lr_mult=10.0)}

# For `default_hooks.checkpoint` (merged into the base's hook: its interval stays): crash-safe
# checkpoints that also carry the RNG state, for an exact --resume.
sk_checkpoint_hook = dict(type='AtomicCheckpointHook')
