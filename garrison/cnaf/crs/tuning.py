"""CRS rules the CNAF skips by default (`crs.default_exclusions: false` brings them back).

Chosen by measurement, not by taste: on the *development* part of the CRS regression tests
(bench/cnaf_crs.py; three quarters of the tests, the held-out quarter was never used for this),
rules (paranoia levels 1-3) were removed one at a time, always the one whose removal cost the
fewest detected attacks per avoided false positive — false positives counted on the CRS tests'
benign requests and, ten times weighted, on Garrison's own benign corpus (bench/corpus/cnaf) —
never letting any attack class fall below what ModSecurity + CRS at paranoia level 2 detects,
with the CNAF's own detectors running beside them. The rules left
here are CRS 3.3 rules that mostly fire on benign near-miss text (prose with SQL words, Markdown,
JWTs, `<?xml …?>` declarations) and whose real attacks the CNAF's own detectors or other CRS rules
catch anyway. Only rule ids live here; the rules themselves stay in the installed CRS.
`bench/cnaf_crs_tune.py` re-measures the list (`--from-default` starts from this one).
"""

from __future__ import annotations

DEFAULT_EXCLUDED_RULES: frozenset[int] = frozenset(
    {
        913101,
        921150,
        930110,
        932105,
        932106,
        932115,
        932130,
        932160,
        932190,
        932200,
        933100,
        933130,
        933151,
        933190,
        933210,
        941100,
        941120,
        941150,
        941210,
        941320,
        941380,
        942100,
        942110,
        942130,
        942190,
        942200,
        942230,
        942251,
        942260,
        942300,
        942310,
        942330,
        942340,
        942390,
        942410,
        942430,
        942440,
        942511,
        944210,
        944250,
        # added by hand: Markdown inline code (942510) and image data URIs (941130) are everyday input
        942510,
        941130,
    }
)
