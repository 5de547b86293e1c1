"""Pipeline plumbing: config schema, wire protocol, transport, stage runner, supervisor."""
