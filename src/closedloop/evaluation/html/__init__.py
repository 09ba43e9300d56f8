"""The evaluation report as one self-contained HTML page (docs/reports.md).

:mod:`.page` holds the page's shell (style, scripts, security policy) and assembles it
(:func:`render_html`, :func:`write_html`); :mod:`.text` the limits, escaping and formats;
:mod:`.charts` the Vega-Lite specs; :mod:`.sections` the header, gate, quality and comparison;
:mod:`.bundle` each bundle's section. ``assets/`` holds the vendored chart libraries.
"""

# the public names, and the shell's parts the demo's report (examples/phishing/loop_report.py) reuses
from closedloop.evaluation.html.page import _ASSETS as _ASSETS
from closedloop.evaluation.html.page import _CSS as _CSS
from closedloop.evaluation.html.page import _DRIVER as _DRIVER
from closedloop.evaluation.html.page import MAX_CURVE_POINTS, MAX_MISTAKES, MAX_SLICE_VALUES, MAX_TEXT, render_html, write_html
from closedloop.evaluation.html.page import _asset as _asset
from closedloop.evaluation.html.page import _csp_hash as _csp_hash
from closedloop.evaluation.html.page import _json_for_script as _json_for_script
from closedloop.evaluation.html.page import _thin as _thin

__all__ = ["MAX_CURVE_POINTS", "MAX_MISTAKES", "MAX_SLICE_VALUES", "MAX_TEXT", "render_html", "write_html"]
