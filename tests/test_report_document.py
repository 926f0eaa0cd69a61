"""One block list, two renderings (autoprune/report/document.py)."""

import base64
import re

from autoprune.report import document as doc

PNG = b"\x89PNG\r\n\x1a\nnot really"
BLOCKS = [
    doc.Heading(1, "autoprune report: s"),
    doc.Facts((("study", "s"), ("budget", "4x"))),
    doc.Callout("**No feasible trial**: nothing exported", "warning"),
    doc.Para("Apply with `autoprune apply`."),
    doc.Table(("schedule", "accuracy"), (("#1 | a", "0.5"),), "lr"),
    doc.Image("figures/pareto.png", "pareto", PNG, "a caption"),
    doc.Bullets(("one", "two")),
]


def test_markdown_has_headings_tables_images_and_escapes_pipes():
    md = doc.to_markdown(BLOCKS)
    assert md.startswith("# autoprune report: s\n")
    assert "| schedule | accuracy |\n| --- | ---: |\n| #1 \\| a | 0.5 |" in md
    assert "![pareto](figures/pareto.png)" in md and "*a caption*" in md
    assert "> **Warning:** **No feasible trial**" in md
    assert "- one\n- two" in md


def test_html_is_self_contained_and_embeds_the_png():
    html = doc.to_html(BLOCKS, title="r")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    (src,) = re.findall(r'<img src="([^"]+)"', html)
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == PNG
    assert not re.search(r'(src|href)="(https?:|//)', html) and "<link" not in html and "<script" not in html
    assert "<strong>No feasible trial</strong>" in html and "<code>autoprune apply</code>" in html
    assert '<td class="r">0.5</td>' in html and "#1 | a" in html


def test_html_escapes_text():
    html = doc.to_html([doc.Para("<b>x</b> & y")], title="<t>")
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html and "<title>&lt;t&gt;</title>" in html
