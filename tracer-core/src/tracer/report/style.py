"""The report's stylesheet, inlined into the page: system fonts, a light theme, no URL."""

from __future__ import annotations

CSS = """
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
header.top{position:sticky;top:0;z-index:5;background:#111827;color:#f9fafb;
display:flex;gap:24px;align-items:center;padding:10px 24px;flex-wrap:wrap}
header.top h1{font-size:16px;margin:0;font-weight:600}
header.top nav a{color:#d1d5db;text-decoration:none;margin-right:14px;font-size:13px}
header.top nav a:hover{color:#fff}
main{max-width:1280px;margin:0 auto;padding:16px 20px 40px}
section{margin-top:22px;scroll-margin-top:52px}
h2{font-size:18px;margin:0 0 10px;padding-top:8px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:14px 0 8px}
h4{font-size:13px;margin:12px 0 6px}
.cards{display:grid;gap:14px;grid-template-columns:repeat(auto-fit,minmax(420px,1fr))}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px}
.card h3{margin:0 0 8px;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:0}
dt{color:var(--muted)}dd{margin:0;word-break:break-word}
.status{font-size:12px;font-weight:700;padding:2px 9px;border-radius:10px;
text-transform:uppercase;letter-spacing:.04em}
.banner{margin:8px 0;padding:8px 10px;border-radius:6px;background:#fee2e2;color:#7f1d1d;
border-left:4px solid #b91c1c}
.note{margin:8px 0;padding:8px 10px;border-radius:6px;background:#fff7ed;
border-left:4px solid #ea580c}
.ok{color:#166534}
.tag{display:inline-block;background:#eef2ff;color:#3730a3;border-radius:10px;
padding:0 8px;margin:0 4px 2px 0;font-size:12px}
details summary{cursor:pointer;color:#374151;margin-top:8px}
pre{background:#f3f4f6;padding:8px;border-radius:6px;overflow:auto;max-height:320px;
font-size:12px}
.grid{display:grid;gap:12px;grid-template-columns:repeat(2,minmax(0,1fr))}
.grid .wide{grid-column:1/-1}
.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:6px;
overflow-x:auto}
.panel svg{width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;background:var(--card);font-size:12.5px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f9fafb;font-weight:600;position:sticky;top:0}
.scroll{max-height:560px;overflow:auto;border:1px solid var(--line);border-radius:6px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.sev{font-weight:700}
.bad{color:#b91c1c;font-weight:700}
table.sample{width:auto}table.sample td{font-family:ui-monospace,SFMono-Regular,Menlo,
Consolas,monospace;font-size:12px}
.muted{color:var(--muted)}
footer{color:var(--muted);font-size:12px;text-align:center;padding:20px}
"""
