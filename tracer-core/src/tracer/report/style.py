"""The report's own stylesheet (page layout, run cards, banners), inlined after uPlot's and the
views' stylesheet shared with the dashboard (`tracer/web/views.css`); no URL anywhere."""

from __future__ import annotations

CSS = """
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff;--panel:#fff;
--accent:#1f77b4;--critical:#d62728;--ok:#2ca02c}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
header.top{position:sticky;top:0;z-index:5;background:#111827;color:#f9fafb;
display:flex;gap:24px;align-items:center;padding:10px 24px;flex-wrap:wrap}
header.top h1{font-size:16px;margin:0;font-weight:600}
header.top nav a{color:#d1d5db;text-decoration:none;margin-right:14px;font-size:13px}
header.top nav a:hover{color:#fff}
main{max-width:1800px;margin:0 auto;padding:16px 20px 40px}
section{margin-top:22px;scroll-margin-top:52px}
h2{font-size:18px;margin:0 0 10px;padding-top:8px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:14px 0 8px}
.cards{display:grid;gap:14px;grid-template-columns:repeat(auto-fit,minmax(420px,1fr))}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px}
.card h3{margin:0 0 8px;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:0}
dt{color:var(--muted)}dd{margin:0;word-break:break-word}
.card .status{font-size:12px;font-weight:700;padding:2px 9px;border-radius:10px;
text-transform:uppercase;letter-spacing:.04em}
.banner{margin:8px 0;padding:8px 10px;border-radius:6px;background:#fee2e2;color:#7f1d1d;
border-left:4px solid #b91c1c}
.note{margin:8px 0;padding:8px 10px;border-radius:6px;background:#fff7ed;
border-left:4px solid #ea580c}
.tag{display:inline-block;background:#eef2ff;color:#3730a3;border-radius:10px;
padding:0 8px;margin:0 4px 2px 0;font-size:12px}
details summary{cursor:pointer;color:#374151;margin-top:8px}
pre{background:#f3f4f6;padding:8px;border-radius:6px;overflow:auto;max-height:320px;
font-size:12px}
.toolbar{display:flex;flex-wrap:wrap;gap:.6rem;align-items:center;margin-bottom:.7rem}
input,select,button{font:inherit}
button{padding:.25rem .7rem;border:1px solid #c5cad3;border-radius:4px;background:#fff;
cursor:pointer}
.per-run{overflow-x:auto}
footer{color:var(--muted);font-size:12px;text-align:center;padding:20px}
"""
