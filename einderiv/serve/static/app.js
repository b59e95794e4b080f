// einderiv serve: the page. Its state lives in the URL (the API's own parameters), so that a
// link reproduces it; every change asks /api/diff and /api/check again, 300 ms after the last key.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const NAMES = /(?:[^\s,;{}]|\{[^}]*\})+/g; // tensor names, as einderiv.reports.tensor_names reads them
  const DEBOUNCE_MS = 300;
  const DEFAULT_EXAMPLE = "gram";
  let examples = [];
  let timer = null;
  let scheduled = null; // what the timer will update: "all" (the derivative and the check) or "check"
  let pending = { diff: null, check: null }; // AbortControllers of the requests in flight
  let code = {};
  let flavour = "python";

  function state() {
    return {
      expr: $("expr").value,
      names: $("wrt").value.match(NAMES) || [],
      order: Math.max(1, parseInt($("order").value, 10) || 1),
      each: $("each").checked,
      layout: $("layout").value,
      notation: $("notation").value,
      claim: $("claim").value,
    };
  }

  // The API's parameters (and the page's URL): expr, wrt or each (repeated), order, layout, notation, claim.
  function parameters(s, kind) {
    const p = new URLSearchParams();
    p.set("expr", s.expr);
    for (const name of s.names) p.append(s.each ? "each" : "wrt", name);
    if (s.order > 1 && !s.each) p.set("order", String(s.order));
    if (kind !== "check" && s.layout !== "numerator") p.set("layout", s.layout);
    if (s.notation !== "auto") p.set("notation", s.notation);
    if (kind !== "diff" && s.claim.trim() && !s.each) p.set("claim", s.claim);
    return p;
  }

  function restore(p) {
    const each = p.getAll("each");
    $("expr").value = p.get("expr") || "";
    $("wrt").value = (each.length ? each : p.getAll("wrt")).join(" ");
    $("each").checked = each.length > 0;
    $("order").value = p.get("order") || "1";
    $("layout").value = p.get("layout") === "denominator" ? "denominator" : "numerator";
    $("notation").value = ["index", "matrix"].includes(p.get("notation")) ? p.get("notation") : "auto";
    $("claim").value = p.get("claim") || "";
  }

  function showExample(example) {
    $("expr").value = example.expr;
    $("wrt").value = (example.each.length ? example.each : example.wrt).join(" ");
    $("each").checked = example.each.length > 0;
    $("order").value = String(example.order);
    $("layout").value = "numerator";
    $("notation").value = "auto";
    $("claim").value = example.claim;
  }

  function syncOrder() {
    $("order").disabled = $("each").checked; // the gradient by each name is of order 1
  }

  // Edits share one timer: an update of everything still pending is not narrowed to the check
  // by an edit of the claim that follows it within DEBOUNCE_MS.
  function schedule(what) {
    syncOrder();
    clearTimeout(timer);
    scheduled = scheduled === "all" ? "all" : what;
    timer = setTimeout(() => {
      const kind = scheduled;
      scheduled = null;
      update(kind);
    }, DEBOUNCE_MS);
  }

  // The derivative first; the check once the expression reads (so that an error under the claim
  // is the claim's, and an expression's error shows once, under the expression).
  async function update(what) {
    syncOrder();
    const s = state();
    const url = "?" + parameters(s, "page").toString();
    history.replaceState(null, "", url);
    $("permalink").href = url;
    if (!s.expr.trim() || !s.names.length) {
      $("status").textContent = !s.expr.trim() ? "type an expression" : "name what to differentiate by";
      return;
    }
    if (what !== "check" && !(await ask("diff", s, showDerivative))) return;
    if (what === "check" && !$("error").hidden) return;
    await ask("check", s, showCheck);
  }

  // One request; false when it failed or a newer one replaced it.
  async function ask(kind, s, show) {
    if (pending[kind]) pending[kind].abort();
    const controller = new AbortController();
    pending[kind] = controller;
    $("status").textContent = "working…";
    let status = 0;
    let data;
    try {
      const response = await fetch(`api/${kind}?` + parameters(s, kind).toString(), { signal: controller.signal });
      status = response.status;
      data = await response.json();
    } catch (err) {
      if (controller.signal.aborted) return false;
      data = { error: `no answer from the server (${err.message}): is einderiv serve still running?` };
    }
    if (pending[kind] !== controller) return false; // a newer request replaced this one
    pending[kind] = null;
    if (!pending.diff && !pending.check) $("status").textContent = "";
    show(data, status);
    if (status !== 200 && kind === "diff") clearCheck();
    return status === 200;
  }

  function clearCheck() {
    if (pending.check) pending.check.abort();
    pending.check = null;
    $("fd").textContent = "";
    $("fd").className = "";
    $("verdict").textContent = "";
    $("verdict").className = "";
    $("notes").hidden = true;
    showError("claim-error", null);
  }

  function caretText(data) {
    if (!data.line || data.source_line === undefined) return "";
    return data.source_line + "\n" + " ".repeat(Math.max(0, data.column - 1)) + "^";
  }

  function showError(box, data) {
    $(box).hidden = !data;
    if (!data) return;
    $(box + "-message").textContent = data.error + (data.line ? ` (line ${data.line}, column ${data.column})` : "");
    $(box + "-caret").textContent = caretText(data);
    $(box + "-caret").hidden = !data.line;
  }

  function showDerivative(data, status) {
    if (status !== 200) {
      showError("error", data);
      for (const id of ["result", "code"]) $(id).classList.add("stale");
      return;
    }
    showError("error", null);
    for (const id of ["result", "code"]) $(id).classList.remove("stale");
    const items = data.gradients || [data];
    renderMath(items.map((item) => item.latex));
    const program = [];
    const matrix = [];
    const einsum = [];
    const rows = [];
    const several = items.length > 1; // the gradient by each name: one block each
    for (const item of items) {
      const read = item.notation === "matrix" ? ["read as: " + item.read_as] : [];
      program.push([...(program.length ? [] : read), ...item.program].join("\n"));
      if (item.matrix.none) matrix.push(`none (${item.matrix.none})`);
      else matrix.push(item.matrix.forms.map((f) => `${f.lhs} = ${f.form}`).join("\n"));
      const terms = item.einsum.map(einsumTerm).join("\n  + ");
      const name = item.derivative.split(" = ")[0];
      einsum.push((several ? name + ": " : "") + (terms || "(none: the derivative is zero)"));
      rows.push([name, item.indices.join(" ") || "(a scalar)", shapeText(item.shape)]);
    }
    const separator = several ? "\n\n" : "\n";
    $("index").textContent = program.join(separator);
    $("matrix").textContent = matrix.join(separator);
    $("matrix").classList.toggle("none", items.every((item) => item.matrix.none));
    $("einsum").textContent = einsum.join(separator);
    const inputs = items[0].inputs;
    for (const name of Object.keys(inputs)) rows.push([name, "", shapeText(inputs[name])]);
    fillTable(rows);
    $("warnings").hidden = !data.warnings.length;
    $("warnings").textContent = data.warnings.map((w) => "warning: " + w).join("\n");
    code = data.code || {};
    showCode();
  }

  function einsumTerm(term) {
    const coefficient = term.coefficient === "1" ? "" : term.coefficient + " * ";
    return `${coefficient}'${term.subscripts}' (${term.operands.join(", ")})`;
  }

  function shapeText(dims) {
    return dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(", ")})`;
  }

  function fillTable(rows) {
    const body = $("shapes").tBodies[0];
    body.replaceChildren(
      ...rows.map((cells) => {
        const tr = document.createElement("tr");
        for (const text of cells) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.appendChild(td);
        }
        return tr;
      }),
    );
  }

  function renderMath(latexes) {
    const box = $("math");
    box.replaceChildren();
    box.dataset.latex = latexes.join("\n");
    for (const latex of latexes) {
      const div = document.createElement("div");
      div.className = "formula";
      if (window.katex) {
        window.katex.render(latex, div, { displayMode: true, throwOnError: false });
      } else {
        div.textContent = latex;
      }
      box.appendChild(div);
    }
    box.dataset.rendered = String(Date.now());
  }

  function showCode() {
    for (const tab of document.querySelectorAll(".tab")) {
      tab.setAttribute("aria-selected", String(tab.dataset.flavour === flavour));
    }
    $("code-text").textContent = code.error ? `(${code.error})` : code[flavour] || "";
  }

  function showCheck(data, status) {
    const verdict = $("verdict");
    verdict.className = "";
    showError("claim-error", null);
    $("notes").hidden = true;
    if (status !== 200) {
      $("fd").textContent = "";
      $("fd").className = "";
      verdict.textContent = "";
      showError("claim-error", data);
      return;
    }
    // the lines einderiv check prints, less the derivative (shown above) and the claim's verdict
    const checks = data.checks || [data];
    const lines = checks.flatMap((c) => {
      const shown = c.report.split("\n").filter((line) => !line.startsWith("derivative: ") && line !== c.message);
      const kept = shown.filter((line) => !line.startsWith("note: "));
      return checks.length > 1 ? [c.derivative.split(" = ")[0] + ":", ...kept.map((line) => "  " + line)] : kept;
    });
    $("fd").textContent = lines.join("\n");
    $("fd").className = checks.every((c) => c.fd_ok) ? "ok" : "failed";
    if (data.claim) {
      verdict.textContent = data.message;
      verdict.className = data.claim; // "matches" or "differs"
    } else {
      verdict.textContent = "";
    }
    $("notes").hidden = !(data.notes && data.notes.length);
    if (data.notes) $("notes").textContent = data.notes.map((n) => "note: " + n).join("\n");
  }

  async function copyCode() {
    const text = $("code-text").textContent;
    let done = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        done = true;
      } catch (err) {
        done = false;
      }
    }
    if (!done) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.appendChild(area);
      area.select();
      try {
        done = document.execCommand("copy");
      } catch (err) {
        done = false;
      }
      area.remove();
    }
    $("copied").textContent = done ? "copied" : "select the code and copy it";
    setTimeout(() => ($("copied").textContent = ""), 1500);
  }

  async function loadExamples() {
    try {
      const response = await fetch("api/examples");
      examples = await response.json();
    } catch (err) {
      examples = [];
    }
    const select = $("examples");
    for (const example of examples) {
      const option = document.createElement("option");
      option.value = example.key;
      option.textContent = example.title;
      select.appendChild(option);
    }
  }

  async function start() {
    await loadExamples();
    const p = new URLSearchParams(location.search);
    if (p.has("expr")) {
      restore(p);
    } else {
      const example = examples.find((e) => e.key === DEFAULT_EXAMPLE);
      if (example) showExample(example);
    }
    for (const id of ["expr", "wrt", "order"]) $(id).addEventListener("input", () => schedule("all"));
    for (const id of ["each", "layout", "notation"]) $(id).addEventListener("change", () => schedule("all"));
    $("claim").addEventListener("input", () => schedule("check"));
    $("examples").addEventListener("change", (event) => {
      const example = examples.find((e) => e.key === event.target.value);
      if (example) {
        showExample(example);
        update("all");
      }
    });
    for (const tab of document.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => {
        flavour = tab.dataset.flavour;
        showCode();
      });
    }
    $("copy").addEventListener("click", copyCode);
    update("all");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
