"""The control loop: poll, plan, guard, reconcile; the operator's controls; failsafe."""
