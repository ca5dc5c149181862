"""Pipeline: teacher -> selection -> students -> evaluation, as resumable steps; scaling studies."""
