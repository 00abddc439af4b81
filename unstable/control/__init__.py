"""Live control: the parameter store (store), the OSC server with feedback (osc), the OSCQuery
tree (oscquery) and its HTTP/websocket server with the control page (webserver, web/), and the
TouchOSC / Max layouts generated from the same schema (controllers)."""
