// Node-RED settings for the benchmark peer, rendered by bench/peer.py ($$name placeholders
// hold JSON values). Headless: no editor, no admin API, no HTTP listener at all.
module.exports = {
    flowFile: $flow_file,
    flowFilePretty: true,
    // The broker's credentials sit in the flow's plain credentials file (mode 600).
    credentialSecret: false,

    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    uiHost: "127.0.0.1",

    logging: {
        console: { level: "info", metrics: false, audit: false },
    },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false },
    editorTheme: { projects: { enabled: false } },
    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false },
        modules: { allowInstall: false },
    },
    functionExternalModules: false,
    exportGlobalContextKeys: false,

    // device_id -> kind; the function node names each point's measurement from it.
    functionGlobalContext: {
        kinds: require($kinds_file),
    },
};
