// Node-RED as a peer in `rulegate bench --peer`: the flow in flows.json, no
// editor and no HTTP server, warnings only. The broker's port comes from
// RULEGATE_BENCH_PORT, which the bench sets.
module.exports = {
    flowFile: "flows.json",
    credentialSecret: false,
    httpAdminRoot: false,
    httpNodeRoot: false,
    uiHost: "127.0.0.1",
    uiPort: 0,
    logging: { console: { level: "warn", metrics: false, audit: false } },
    contextStorage: { default: { module: "memory" } },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
};
