"""`scicot-review`: a local web app to review teacher rationales and read a run's report.

serve RUN_DIR: the rationales page (keep / drop / edit into the review file that
`scicot-teacher export` / `apply-review` use) and the run report; report RUN_DIR --out FILE: the
report as one self-contained HTML file. Never imports jax: it starts in about a second.
"""
