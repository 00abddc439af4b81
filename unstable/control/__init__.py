"""Live control: the parameter store (params), the OSC server with feedback (osc), and the
TouchOSC / Max layouts generated from the same schema (controllers)."""
