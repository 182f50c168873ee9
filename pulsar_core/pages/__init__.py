"""The HTML pages the demo's report and the predictor's live map share: pure functions, data in
(the API's forecast items, as received), one self-contained HTML string out (inline CSS, SVG and
script; no network assets). No web framework here and nothing from the CLI: the predictor serves
`live.live_page`, `pulsar demo` builds its report on `shell.page` and `shell.map_sections`.

- `hexmap`: one service type's H3 hexagons, coloured by expected change, one layer per horizon.
- `shell`: the page shell (CSS, the horizon script) and the map sections of a page.
- `live`: the predictor's GET /map.
"""
