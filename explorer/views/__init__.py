"""One module per tab. Each `build(explorer, nav)` lays out its tab inside the current gr.Blocks and wires
its events; `nav` holds what lets any tab open a feature (see explorer/app.py)."""
