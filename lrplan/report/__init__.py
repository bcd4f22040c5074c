"""Reports: build them from finished results, render to HTML/Markdown, plots."""
