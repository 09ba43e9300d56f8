/* closedloop console: draw every Vega-Lite chart of the page, under a strict Content-Security-Policy.
 *
 * A chart is a <div class="vl-chart"> with its spec either
 *   - fetched:  <div class="vl-chart" data-spec-url="/systems/phishing/goals/spec.json"></div>
 *   - inline:   <div class="vl-chart" data-spec="goal-spec"></div>
 *               <script type="application/json" id="goal-spec">{ …the Vega-Lite spec… }</script>
 *     (data-spec names the id of a JSON <script>; empty data-spec: the next sibling JSON <script>).
 * A JSON <script> is data, not code: the CSP's script-src does not apply to it.
 *
 * Vega compiles expressions with `new Function` unless told otherwise; the console's CSP has no
 * 'unsafe-eval', so charts are parsed to an AST (ast: true) and evaluated by vega-interpreter
 * (expr: vega.expressionInterpreter). vega-embed's default <style> element and vega-tooltip's are
 * inline styles (blocked by style-src 'self'): both are turned off; charts.css styles them instead.
 *
 * Load order: vega.min.js, vega-lite.min.js, vega-embed.min.js, vega-interpreter.min.js, charts.js
 * (all from the app's own origin). Each chart gets data-chart-state "drawing", then "drawn" or
 * "failed" (with a message in the div); <html data-charts> becomes "drawn" or "failed" once every
 * chart of a pass is done. Content swapped in by htmx is drawn too (htmx:afterSettle). A spec
 * without a "description" gets the div's data-description (else its title): Vega makes it the
 * <svg>'s accessible name.
 */
(function () {
  "use strict";

  function jsonScript(el) {
    var id = el.getAttribute("data-spec");
    var node = id ? document.getElementById(id) : null;
    if (!id) {
      node = el.nextElementSibling;
      while (node && !(node.tagName === "SCRIPT" && node.type === "application/json")) {
        node = node.nextElementSibling;
      }
    }
    if (!node || node.tagName !== "SCRIPT" || node.type !== "application/json") {
      throw new Error("no <script type=\"application/json\"> holds this chart's spec" + (id ? " (id " + id + ")" : ""));
    }
    return JSON.parse(node.textContent);
  }

  function specOf(el) {
    var url = el.getAttribute("data-spec-url");
    if (url) {
      return fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}}).then(function (r) {
        if (!r.ok) {
          throw new Error("GET " + url + " answered " + r.status);
        }
        return r.json();
      });
    }
    return new Promise(function (resolve) { resolve(jsonScript(el)); });
  }

  function options(el) {
    return {
      ast: true,
      expr: window.vega.expressionInterpreter,
      actions: false,
      defaultStyle: false,
      renderer: el.getAttribute("data-renderer") === "canvas" ? "canvas" : "svg",
      tooltip: {disableDefaultStyle: true},
    };
  }

  // Vega names the chart's <svg> (its accessible name, which axe requires) after the spec's
  // description: a spec without one gets the div's data-description, else its title.
  function described(el, spec) {
    if (spec && typeof spec === "object" && !spec.description) {
      var title = spec.title && typeof spec.title === "object" ? spec.title.text : spec.title;
      spec.description = el.getAttribute("data-description") || (title ? String(title) : "Chart");
    }
    return spec;
  }

  // Vega-Lite's interval-selection brush marks get role="graphics-symbol" and no name (axe:
  // svg-img-alt, serious); they are decoration, hidden from assistive technology here.
  function unnamedMarksHidden(el) {
    Array.prototype.forEach.call(el.querySelectorAll("svg [role=graphics-symbol]:not([aria-label])"), function (g) {
      g.setAttribute("aria-hidden", "true");
    });
  }

  function draw(el) {
    el.setAttribute("data-chart-state", "drawing");
    return specOf(el)
      .then(function (spec) { return window.vegaEmbed(el, described(el, spec), options(el)); })
      .then(function (result) {
        unnamedMarksHidden(el);
        el._closedloopView = result.view;
        el.setAttribute("data-chart-state", "drawn");
        return true;
      })
      .catch(function (err) {
        el.setAttribute("data-chart-state", "failed");
        el.textContent = "This chart could not be drawn: " + (err && err.message ? err.message : String(err));
        if (window.console) {
          window.console.error("closedloop chart failed", err);
        }
        return false;
      });
  }

  function drawAll(root) {
    var scope = root && root.querySelectorAll ? root : document;
    var els = Array.prototype.slice.call(scope.querySelectorAll("div.vl-chart:not([data-chart-state])"));
    if (scope !== document && scope.matches && scope.matches("div.vl-chart:not([data-chart-state])")) {
      els.unshift(scope);
    }
    if (!window.vega || !window.vegaEmbed || !window.vega.expressionInterpreter) {
      els.forEach(function (el) {
        el.setAttribute("data-chart-state", "failed");
        el.textContent = "Charts need vega, vega-lite, vega-embed and vega-interpreter, loaded before charts.js.";
      });
      document.documentElement.setAttribute("data-charts", "failed");
      return Promise.resolve(false);
    }
    return Promise.all(els.map(draw)).then(function (ok) {
      var all = ok.every(Boolean);
      document.documentElement.setAttribute("data-charts", all ? "drawn" : "failed");
      return all;
    });
  }

  function finalize(root) {
    if (!root || !root.querySelectorAll) {
      return;
    }
    var els = Array.prototype.slice.call(root.querySelectorAll("div.vl-chart"));
    if (root.matches && root.matches("div.vl-chart")) {
      els.push(root);
    }
    els.forEach(function (el) {
      if (el._closedloopView) {
        el._closedloopView.finalize();
        el._closedloopView = null;
      }
    });
  }

  window.closedloopCharts = {drawAll: drawAll};
  document.addEventListener("htmx:beforeCleanupElement", function (e) { finalize(e.target); });
  document.addEventListener("htmx:afterSettle", function (e) { drawAll(e.target); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  } else {
    drawAll(document);
  }
})();
