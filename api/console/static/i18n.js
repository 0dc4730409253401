// Every label of the console, in Chinese (the default) and English: one dictionary.
// The names of kinds, metrics, attributes, districts and the city come from the platform's
// reference data (catalogue.js): shown by their titles, a raw name only while unknown.

export const LABELS = Object.freeze({
  zh: {
    "app.title": "城市物联网 · 运营控制台",
    "app.title.city": "{city}物联网 · 运营控制台",
    "app.short": "城市物联网",
    "nav.overview": "总览",
    "nav.workorders": "工单",
    "nav.screen": "大屏",
    "nav.signout": "退出",
    "lang.switch": "EN",
    "lang.switch.title": "Switch to English",
    "live.connecting": "连接中…",
    "live.live": "实时",
    "live.waiting": "{s} 秒后重连",
    "live.title": "实时数据流（/api/v1/stream）",
    "signin.title": "登录",
    "signin.username": "用户名",
    "signin.password": "密码",
    "signin.submit": "登录",
    "signin.help": "请使用管理员为您开设的账号登录（cityiot users add）。本机运行 cityiot run 时，终端会打印 admin 账号的密码文件。连续 5 次密码错误将锁定账号 15 分钟；30 分钟无操作会自动退出。",
    "signin.checking": "正在验证…",
    "signin.wrong": "用户名或密码错误。",
    "signin.locked": "账号已被锁定：{detail}",
    "signin.slow": "尝试过于频繁，请稍后再试。",
    "error.401": "会话已结束，请重新登录。",
    "error.403": "无权执行该操作：{detail}",
    "error.network": "无法连接平台 API，请检查平台是否在运行。",
    "error.other": "请求失败（{status}）：{detail}",
    "error.empty": "请输入用户名和密码。",
    "kpi.online": "设备在线率",
    "kpi.online.sub": "在线 {online} / 共 {total}",
    "kpi.lighting": "亮灯率",
    "kpi.lighting.day": "—，白天",
    "kpi.lighting.sub": "亮 {on} / 应亮 {should}",
    "kpi.lighting.daysub": "日落 {sunset}",
    "kpi.alerts": "未处理告警",
    "kpi.alerts.pending": "待触发 {n}",
    "kpi.verify": "按时核查率",
    "kpi.verify.sub": "目标 {target} · 按时核查 {n} / 应核查 {due}",
    "kpi.closure": "结案率",
    "kpi.closure.sub": "目标 {target} · 结案 {n} / 应结案 {due} · 按期结案率 {onTime}",
    "kpi.notdue": "目标 {target} · 无到期案件（近 30 天派发 {created} 单）",
    "kpi.none": "—",
    "severity.critical": "紧急",
    "severity.major": "重要",
    "severity.minor": "次要",
    "severity.warning": "提示",
    "alert.pending": "待触发",
    "alert.firing": "告警中",
    "alert.acknowledged": "已确认",
    "alert.resolved": "已恢复",
    "alerts.title": "实时告警",
    "alerts.empty": "当前没有未处理的告警。",
    "alerts.ack": "确认",
    "alerts.more": "另有 {n} 条告警未列出",
    "alerts.acking": "确认中…",
    "alerting.on": "提示音 开",
    "alerting.off": "提示音 关",
    "alerting.title": "紧急、重要告警到达时响铃并弹出桌面通知（点击切换）",
    "alerting.notification": "{severity}告警 · {device}",
    "status.online": "在线",
    "status.offline": "离线",
    "status.unknown": "未上报",
    "status.decommissioned": "已停用",
    "status.alerting": "告警",
    "map.title": "城市设备地图",
    "map.count": "{n} 台设备",
    "map.hint": "点击设备查看详情",
    "map.empty": "没有可显示的设备。",
    "map.kinds": "全部类型",
    "map.kind": "设备类型",
    "map.kind.count": "{kind}（{n}）",
    "map.state": "状态",
    "map.states": "全部状态",
    "map.district": "区县",
    "map.districts": "全部区县",
    "map.cluster.hint": "点击放大",
    "device.back": "← 返回总览",
    "device.kind": "类型",
    "device.district": "区县",
    "device.vendor": "厂商",
    "device.link": "接入方式",
    "link.mqtt": "MQTT",
    "link.http": "HTTP",
    "link.chirpstack": "LoRaWAN（ChirpStack）",
    "link.ctwing": "NB-IoT（电信 CTWing）",
    "link.onenet": "NB-IoT（移动 OneNET）",
    "device.address": "地址",
    "device.status": "状态",
    "device.last_seen": "最后上报",
    "device.battery": "电量",
    "device.latest": "最新读数",
    "device.latest.none": "该设备尚未上报数据。",
    "device.charts": "近期读数",
    "device.alerts": "该设备的未处理告警",
    "device.range.1h": "1 小时",
    "device.range.24h": "24 小时",
    "device.range.7d": "7 天",
    "device.nodata": "此时段没有读数",
    "device.live": "实时更新",
    "device.notfound": "找不到设备 {id}。",
    "board.title": "工单看板",
    "board.team": "班组",
    "board.all": "全部班组",
    "board.empty": "暂无工单",
    "board.verify_due": "到场期限",
    "board.close_due": "结案期限",
    "board.overdue": "已超时",
    "board.assignee": "接单人",
    "board.created": "派单",
    "board.navigate": "导航",
    "board.navigate.title": "在手机地图中打开导航",
    "board.note": "备注",
    "board.note.placeholder": "备注（可选，随此步提交）",
    "board.journal": "处置记录",
    "sla.verify": "到场",
    "sla.close": "结案",
    "sla.left": "剩 {d}",
    "sla.overdue": "超时 {d}",
    "sla.d_h": "{d} 天 {h} 时",
    "sla.h_min": "{h} 时 {m} 分",
    "sla.min_s": "{m} 分 {s} 秒",
    "screen.title": "{city}城市物联网运行监测",
    "screen.ticker": "最新告警",
    "screen.districts": "近 24 小时告警 · 按区县",
    "screen.kinds": "近 24 小时告警 · 按设备类型",
    "screen.funnel": "近 30 天工单处置",
    "screen.links": "各接入方式在线设备",
    "screen.registered": "登记",
    "screen.target": "目标 {target}",
    "wo.dispatched": "已派单",
    "wo.accepted": "已接单",
    "wo.on_site": "已到场",
    "wo.resolved": "已处置",
    "wo.closed": "已结案",
    "action.accept": "接单",
    "action.on_site": "到达现场",
    "action.resolve": "处置完成",
    "action.close": "结案",
    "bool.true": "是",
    "bool.false": "否",
    "nav.deadletters": "死信",
    "nav.silences": "屏蔽与维护",
    "dl.title": "死信",
    "dl.hint": "平台拒收的消息，最新的在前，附拒收原因；原始内容只按文字显示。",
    "dl.vendor": "厂商",
    "dl.vendors": "全部厂商",
    "dl.device": "设备编号",
    "dl.reason": "原因包含",
    "dl.reason.placeholder": "例如 range、not registered",
    "dl.apply": "筛选",
    "dl.empty": "没有符合条件的死信。",
    "dl.more": "加载更多",
    "dl.loading": "加载中…",
    "dl.time": "接收时间",
    "dl.topic": "主题",
    "dl.payload.text": "原始内容（文本，共 {size} 字节）",
    "dl.payload.base64": "原始内容（非 UTF-8 文本，以 base64 显示，共 {size} 字节）",
    "dl.payload.cut": "平台只保存了前 {stored} 字节",
    "dl.all": "显示全部（{n} 字符）",
    "dl.less": "收起",
    "sil.title": "屏蔽与维护",
    "sil.hint": "静默在设定时间内暂停所匹配告警的通知；告警照常记录和显示。",
    "sil.new": "新建静默",
    "sil.matchers.hint": "告警须同时满足下列全部条件才会被静默。=~ 与 !~ 为正则表达式，须匹配整个值。",
    "sil.label": "标签",
    "sil.label.rule": "规则",
    "sil.label.kind": "设备类型",
    "sil.label.district": "区县",
    "sil.label.severity": "级别",
    "sil.label.vendor": "厂商",
    "sil.label.device_id": "设备编号",
    "sil.label.team": "班组",
    "sil.op": "运算符",
    "sil.op.0": "等于",
    "sil.op.1": "不等于",
    "sil.op.2": "匹配正则",
    "sil.op.3": "不匹配正则",
    "sil.value": "值",
    "sil.matcher.add": "＋ 添加条件",
    "sil.matcher.remove": "删除此条件",
    "sil.duration": "时长",
    "sil.minutes": "{n} 分钟",
    "sil.hours": "{n} 小时",
    "sil.days": "{n} 天",
    "sil.until": "直到指定时间…",
    "sil.until.label": "结束时间（城市时间）",
    "sil.comment": "说明",
    "sil.comment.placeholder": "原因，例如：解放路路灯检修",
    "sil.create": "创建静默",
    "sil.creating": "创建中…",
    "sil.current": "生效中与待生效",
    "sil.expired": "已结束",
    "sil.expired.more": "另有 {n} 条更早结束的静默未列出",
    "sil.none": "无",
    "sil.state.active": "生效中",
    "sil.state.pending": "待生效",
    "sil.state.expired": "已结束",
    "sil.from_to": "{from} 至 {to}",
    "sil.by": "创建人 {who}",
    "sil.expire": "立即结束",
    "sil.expiring": "结束中…",
    "sil.windows": "维护窗口",
    "sil.windows.hint": "维护窗口（每周固定时段的屏蔽）由管理员写在告警路由文件 rules/routing.yaml 的 maintenance_windows 中，平台 API 不提供，本页不显示。",
    "nav.devices": "设备台账",
    "nav.vendors": "厂商",
    "registry.title": "设备台账",
    "registry.id": "设备编号",
    "registry.search": "搜索设备",
    "registry.search.placeholder": "设备编号或地址",
    "registry.vendors": "全部厂商",
    "registry.count": "共 {total} 台，符合条件 {n} 台",
    "registry.loading": "正在加载设备…",
    "registry.empty": "没有符合条件的设备。",
    "registry.page": "第 {page} / {pages} 页",
    "registry.prev": "上一页",
    "registry.next": "下一页",
    "import.title": "导入设备（CSV）",
    "import.help": "第一行为列名：{columns}，再加该类型的属性列和 install_date（可选）；每行一台设备，已登记的设备按文件更新。文件须为 UTF-8 编码。",
    "import.template": "下载 CSV 模板",
    "import.template.kind": "模板的设备类型",
    "import.file": "CSV 文件",
    "import.create_vendors": "自动登记文件中尚未登记的厂商（编解码 json）",
    "import.submit": "导入",
    "import.sending": "导入中…",
    "import.choose": "请先选择一个 CSV 文件。",
    "import.result": "新增 {created} 台 · 更新 {updated} 台 · 未变 {unchanged} 台 · 拒绝 {refused} 行",
    "import.vendors_created": "新登记的厂商：{list}",
    "import.errors": "被拒绝的行（未导入）",
    "import.warnings": "提示",
    "import.lines": "行号为文件中的行号，第 1 行为列名；原因为平台原文。",
    "import.line": "行号",
    "import.column": "列",
    "import.reason": "原因",
    "device.history": "告警历史",
    "history.window": "近 {days} 天，全部状态，最新的在前",
    "history.empty": "近 {days} 天没有告警。",
    "history.more": "加载更多",
    "history.loading": "加载中…",
    "history.resolved": "恢复于 {time}",
    "district.devices": "设备 {n} 台",
    "district.registry": "在设备台账中查看",
    "district.history": "该区县的告警历史",
    "vendors.title": "厂商",
    "vendors.hint": "签发的密码和令牌只显示一次。",
    "vendors.readonly": "签发与吊销需管理员权限。",
    "vendors.empty": "尚未登记厂商。",
    "vendors.codec": "编解码",
    "vendors.devices": "设备",
    "vendors.devices.count": "{n} 台（在线 {online} 台）",
    "vendors.links": "接入方式",
    "vendors.created": "登记时间",
    "vendors.publish": "可发布的主题",
    "vendors.subscribe": "可订阅的主题",
    "vendors.accounts": "MQTT 账号",
    "vendors.accounts.empty": "尚无 MQTT 账号。",
    "vendors.username": "用户名",
    "vendors.active": "有效",
    "vendors.revoked": "已吊销",
    "vendors.issued_at": "签发时间",
    "vendors.issued_by": "签发人",
    "vendors.revoked_at": "吊销时间",
    "vendors.issue": "签发 MQTT 账号",
    "vendors.revoke": "吊销",
    "vendors.revoke.confirm": "确认吊销",
    "vendors.intake": "接入令牌（CTWing / OneNET 推送）",
    "vendors.intake.help": "每个厂商一个令牌，平台只保存其哈希。CTWing 推送地址：{ctwing}；OneNET 推送地址：{onenet}。重新签发会替换旧令牌，旧令牌立即失效。",
    "vendors.intake.issue": "签发新令牌",
    "secret.once.password": "密码只显示这一次：关闭或离开本页后无法再次查看（平台只保存其哈希）。请立即复制并妥善交给厂商。",
    "secret.once.token": "令牌只显示这一次：关闭或离开本页后无法再次查看（平台只保存其哈希）。请立即复制并妥善交给厂商。",
    "secret.password": "密码",
    "secret.token": "令牌",
    "secret.broker": "MQTT 服务器",
    "secret.copy": "复制",
    "secret.copied": "已复制",
    "secret.copy.manual": "已选中，请按 Ctrl+C 复制",
    "secret.done": "我已保存，关闭",
    "secret.not_reloaded": "MQTT 服务器尚未重新加载：该账号在其下次重新加载后生效。",
    "secret.replaced": "已替换该厂商原有的令牌，旧令牌已失效。",
  },
  en: {
    "app.title": "City IoT · Operations Console",
    "app.title.city": "{city} City IoT · Operations Console",
    "app.short": "City IoT",
    "nav.overview": "Overview",
    "nav.workorders": "Work orders",
    "nav.screen": "Big screen",
    "nav.signout": "Sign out",
    "lang.switch": "中文",
    "lang.switch.title": "切换到中文",
    "live.connecting": "Connecting…",
    "live.live": "Live",
    "live.waiting": "Reconnecting in {s} s",
    "live.title": "Live stream (/api/v1/stream)",
    "signin.title": "Sign in",
    "signin.username": "Username",
    "signin.password": "Password",
    "signin.submit": "Sign in",
    "signin.help": "Sign in with the account an administrator made for you (cityiot users add). On this machine, cityiot run prints the file holding the admin account's password. Five wrong passwords lock the account for 15 minutes; 30 minutes without use signs you out.",
    "signin.checking": "Checking…",
    "signin.wrong": "Wrong username or password.",
    "signin.locked": "The account is locked: {detail}",
    "signin.slow": "Too many attempts; wait a moment and try again.",
    "error.401": "The session has ended; sign in again.",
    "error.403": "Not allowed: {detail}",
    "error.network": "Cannot reach the platform's API; is the platform running?",
    "error.other": "The request failed ({status}): {detail}",
    "error.empty": "Enter your username and password.",
    "kpi.online": "Devices online",
    "kpi.online.sub": "{online} of {total} online",
    "kpi.lighting": "Lighting rate",
    "kpi.lighting.day": "—, daytime",
    "kpi.lighting.sub": "{on} lit of {should} due",
    "kpi.lighting.daysub": "sunset {sunset}",
    "kpi.alerts": "Open alerts",
    "kpi.alerts.pending": "{n} pending",
    "kpi.verify": "On-time verification",
    "kpi.verify.sub": "target {target} · {n} of {due} due verified on time",
    "kpi.closure": "Closure rate",
    "kpi.closure.sub": "target {target} · {n} of {due} due closed · on time {onTime}",
    "kpi.notdue": "target {target} · no case due yet ({created} dispatched in 30 days)",
    "kpi.none": "—",
    "severity.critical": "Critical",
    "severity.major": "Major",
    "severity.minor": "Minor",
    "severity.warning": "Warning",
    "alert.pending": "Pending",
    "alert.firing": "Firing",
    "alert.acknowledged": "Acknowledged",
    "alert.resolved": "Resolved",
    "alerts.title": "Live alerts",
    "alerts.empty": "No open alerts.",
    "alerts.ack": "Acknowledge",
    "alerts.more": "{n} more alerts not listed",
    "alerts.acking": "Acknowledging…",
    "alerting.on": "Sound on",
    "alerting.off": "Sound off",
    "alerting.title": "Sound and desktop notification when a critical or major alert arrives (click to switch)",
    "alerting.notification": "{severity} alert · {device}",
    "status.online": "Online",
    "status.offline": "Offline",
    "status.unknown": "Never reported",
    "status.decommissioned": "Decommissioned",
    "status.alerting": "Alerting",
    "map.title": "City device map",
    "map.count": "{n} devices",
    "map.hint": "Click a device for its page",
    "map.empty": "No devices to show.",
    "map.kinds": "All kinds",
    "map.kind": "Device kind",
    "map.kind.count": "{kind} ({n})",
    "map.state": "State",
    "map.states": "All states",
    "map.district": "District",
    "map.districts": "All districts",
    "map.cluster.hint": "Click to zoom in",
    "device.back": "← Back to the overview",
    "device.kind": "Kind",
    "device.district": "District",
    "device.vendor": "Vendor",
    "device.link": "Link",
    "link.mqtt": "MQTT",
    "link.http": "HTTP",
    "link.chirpstack": "LoRaWAN (ChirpStack)",
    "link.ctwing": "NB-IoT (CTWing)",
    "link.onenet": "NB-IoT (OneNET)",
    "device.address": "Address",
    "device.status": "Status",
    "device.last_seen": "Last seen",
    "device.battery": "Battery",
    "device.latest": "Latest readings",
    "device.latest.none": "This device has not reported yet.",
    "device.charts": "Recent readings",
    "device.alerts": "Open alerts of this device",
    "device.range.1h": "1 hour",
    "device.range.24h": "24 hours",
    "device.range.7d": "7 days",
    "device.nodata": "No readings in this period",
    "device.live": "Live",
    "device.notfound": "No device {id}.",
    "board.title": "Work-order board",
    "board.team": "Team",
    "board.all": "All teams",
    "board.empty": "No work orders",
    "board.verify_due": "On site by",
    "board.close_due": "Closed by",
    "board.overdue": "Overdue",
    "board.assignee": "Taken by",
    "board.created": "Dispatched",
    "board.navigate": "Navigate",
    "board.navigate.title": "Open navigation in the phone's map app",
    "board.note": "Note",
    "board.note.placeholder": "Note (optional, sent with this step)",
    "board.journal": "Journal",
    "sla.verify": "On site",
    "sla.close": "Close",
    "sla.left": "{d} left",
    "sla.overdue": "{d} overdue",
    "sla.d_h": "{d} d {h} h",
    "sla.h_min": "{h} h {m} min",
    "sla.min_s": "{m} min {s} s",
    "screen.title": "{city} city IoT operations",
    "screen.ticker": "Latest alerts",
    "screen.districts": "Alerts in 24 h · by district",
    "screen.kinds": "Alerts in 24 h · by kind",
    "screen.funnel": "Work orders of 30 days",
    "screen.links": "Devices online by link",
    "screen.registered": "Registered",
    "screen.target": "target {target}",
    "wo.dispatched": "Dispatched",
    "wo.accepted": "Accepted",
    "wo.on_site": "On site",
    "wo.resolved": "Resolved",
    "wo.closed": "Closed",
    "action.accept": "Accept",
    "action.on_site": "Arrived on site",
    "action.resolve": "Mark fixed",
    "action.close": "Close",
    "bool.true": "yes",
    "bool.false": "no",
    "nav.deadletters": "Dead letters",
    "nav.silences": "Silences",
    "dl.title": "Dead letters",
    "dl.hint": "Messages the platform rejected, newest first, with the reason; raw payloads are shown as text only.",
    "dl.vendor": "Vendor",
    "dl.vendors": "All vendors",
    "dl.device": "Device id",
    "dl.reason": "Reason contains",
    "dl.reason.placeholder": "e.g. range, not registered",
    "dl.apply": "Filter",
    "dl.empty": "No dead letters match.",
    "dl.more": "Load more",
    "dl.loading": "Loading…",
    "dl.time": "Received",
    "dl.topic": "Topic",
    "dl.payload.text": "Payload (text, {size} bytes)",
    "dl.payload.base64": "Payload (not UTF-8 text, shown as base64, {size} bytes)",
    "dl.payload.cut": "only the first {stored} bytes were kept",
    "dl.all": "Show all ({n} characters)",
    "dl.less": "Show less",
    "sil.title": "Silences and maintenance",
    "sil.hint": "A silence mutes the notifications of the alerts it matches for a while; the alerts are still recorded and shown.",
    "sil.new": "New silence",
    "sil.matchers.hint": "An alert is silenced when it matches every matcher. =~ and !~ take a regular expression that must match the whole value.",
    "sil.label": "Label",
    "sil.label.rule": "Rule",
    "sil.label.kind": "Kind",
    "sil.label.district": "District",
    "sil.label.severity": "Severity",
    "sil.label.vendor": "Vendor",
    "sil.label.device_id": "Device id",
    "sil.label.team": "Team",
    "sil.op": "Operator",
    "sil.op.0": "equals",
    "sil.op.1": "does not equal",
    "sil.op.2": "matches the regular expression",
    "sil.op.3": "does not match the regular expression",
    "sil.value": "Value",
    "sil.matcher.add": "+ Add a matcher",
    "sil.matcher.remove": "Remove this matcher",
    "sil.duration": "For",
    "sil.minutes": "{n} min",
    "sil.hours": "{n} h",
    "sil.days": "{n} d",
    "sil.until": "Until a time…",
    "sil.until.label": "Ends at (city time)",
    "sil.comment": "Comment",
    "sil.comment.placeholder": "Why, e.g. Jiefang Road streetlight maintenance",
    "sil.create": "Create silence",
    "sil.creating": "Creating…",
    "sil.current": "In force and to come",
    "sil.expired": "Ended",
    "sil.expired.more": "{n} silences that ended earlier are not listed",
    "sil.none": "None",
    "sil.state.active": "In force",
    "sil.state.pending": "To come",
    "sil.state.expired": "Ended",
    "sil.from_to": "{from} to {to}",
    "sil.by": "by {who}",
    "sil.expire": "End now",
    "sil.expiring": "Ending…",
    "sil.windows": "Maintenance windows",
    "sil.windows.hint": "Maintenance windows (mutes at fixed hours of the week) are set by an administrator under maintenance_windows in the routing file, rules/routing.yaml; the API does not serve them, so this page does not show them.",
    "nav.devices": "Devices",
    "nav.vendors": "Vendors",
    "registry.title": "Device registry",
    "registry.id": "Device id",
    "registry.search": "Search devices",
    "registry.search.placeholder": "Device id or address",
    "registry.vendors": "All vendors",
    "registry.count": "{n} of {total} devices",
    "registry.loading": "Loading devices…",
    "registry.empty": "No device matches.",
    "registry.page": "Page {page} of {pages}",
    "registry.prev": "Previous",
    "registry.next": "Next",
    "import.title": "Import devices (CSV)",
    "import.help": "The first line names the columns: {columns}, then the kind's attribute columns and install_date (optional); one device a line, registered devices are updated from the file. The file must be UTF-8.",
    "import.template": "Download a CSV template",
    "import.template.kind": "Template for the kind",
    "import.file": "CSV file",
    "import.create_vendors": "Register the vendors the file names that are not registered (codec json)",
    "import.submit": "Import",
    "import.sending": "Importing…",
    "import.choose": "Choose a CSV file first.",
    "import.result": "{created} created · {updated} updated · {unchanged} unchanged · {refused} rows refused",
    "import.vendors_created": "Vendors registered: {list}",
    "import.errors": "Rows refused (not imported)",
    "import.warnings": "Warnings",
    "import.lines": "Line numbers are the file's, line 1 being the header; the reasons are the platform's own words.",
    "import.line": "Line",
    "import.column": "Column",
    "import.reason": "Reason",
    "device.history": "Alert history",
    "history.window": "last {days} days, every state, newest first",
    "history.empty": "No alerts in {days} days.",
    "history.more": "Load more",
    "history.loading": "Loading…",
    "history.resolved": "resolved {time}",
    "district.devices": "{n} devices",
    "district.registry": "Show in the device registry",
    "district.history": "Alert history of the district",
    "vendors.title": "Vendors",
    "vendors.hint": "Passwords and tokens issued here are shown once.",
    "vendors.readonly": "Issuing and revoking take an administrator.",
    "vendors.empty": "No vendor is registered.",
    "vendors.codec": "Codec",
    "vendors.devices": "Devices",
    "vendors.devices.count": "{n} ({online} online)",
    "vendors.links": "Links",
    "vendors.created": "Registered",
    "vendors.publish": "May publish to",
    "vendors.subscribe": "May subscribe to",
    "vendors.accounts": "MQTT accounts",
    "vendors.accounts.empty": "No MQTT account yet.",
    "vendors.username": "Username",
    "vendors.active": "Active",
    "vendors.revoked": "Revoked",
    "vendors.issued_at": "Issued",
    "vendors.issued_by": "Issued by",
    "vendors.revoked_at": "Revoked",
    "vendors.issue": "Issue an MQTT account",
    "vendors.revoke": "Revoke",
    "vendors.revoke.confirm": "Confirm revoking",
    "vendors.intake": "Intake token (CTWing / OneNET push)",
    "vendors.intake.help": "One token per vendor; the platform keeps only its hash. CTWing pushes to {ctwing}; OneNET to {onenet}. Issuing a new one replaces the old one, which stops working at once.",
    "vendors.intake.issue": "Issue a new token",
    "secret.once.password": "This password is shown this once: once closed, or this page left, it cannot be seen again (the platform keeps only its hash). Copy it now and hand it to the vendor safely.",
    "secret.once.token": "This token is shown this once: once closed, or this page left, it cannot be seen again (the platform keeps only its hash). Copy it now and hand it to the vendor safely.",
    "secret.password": "Password",
    "secret.token": "Token",
    "secret.broker": "MQTT broker",
    "secret.copy": "Copy",
    "secret.copied": "Copied",
    "secret.copy.manual": "Selected: press Ctrl+C to copy",
    "secret.done": "Saved; close",
    "secret.not_reloaded": "The broker was not reloaded: the account works after its next reload.",
    "secret.replaced": "The vendor's previous token was replaced and no longer works.",
  },
});

export const LANGUAGES = Object.keys(LABELS);
const STORAGE_KEY = "cityiot.lang";
const TIGHT_UNITS = new Set(["°", "%"]);

export class I18n {
  /** `catalogue`: the platform's reference data (catalogue.js), names in both languages. */
  constructor(storage, catalogue) {
    this.storage = storage;
    this.catalogue = catalogue;
    const kept = storage.getItem(STORAGE_KEY);
    this.lang = LANGUAGES.includes(kept) ? kept : "zh";
    this.listeners = new Set();
  }

  /** The label `key` with {name} placeholders filled from `params`. */
  t(key, params = {}) {
    const text = LABELS[this.lang][key] ?? LABELS.zh[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : `{${name}}`));
  }

  /** A {zh, en} title in this language (the other one when this one is missing). */
  title(titles) {
    return titles?.[this.lang] || titles?.zh || titles?.en || "";
  }

  /** The console's title, with the city's name once it is known. */
  appTitle() {
    const city = this.title(this.catalogue.city?.name);
    return city ? this.t("app.title.city", { city }) : this.t("app.title");
  }

  /** A kind's title (English capitalised, as a heading); its id while unknown. */
  kind(id) {
    const name = this.title(this.catalogue.kind(id)?.title) || String(id ?? "");
    return this.lang === "en" ? name.charAt(0).toUpperCase() + name.slice(1) : name;
  }

  district(id) {
    return this.title(this.catalogue.district(id)) || String(id ?? "");
  }

  /** A metric's title with its unit, as screens show it: 倾角 (°), tilt (°); its name while unknown. */
  metric(kindId, name) {
    return metricLabel(this.catalogue.metric(kindId, name), this.lang) ?? name;
  }

  /** How a device reports (GET /devices' `link`): MQTT, LoRaWAN (ChirpStack), NB-IoT (CTWing)…;
   * "—" before its first message; a link the console does not know by its name. */
  link(value) {
    if (!value) return this.t("kpi.none");
    const key = `link.${value}`;
    return key in LABELS[this.lang] ? this.t(key) : String(value);
  }

  /** A registry attribute's title; its name while unknown. */
  attribute(kindId, name) {
    return this.title(this.catalogue.attribute(kindId, name)?.title) || name;
  }

  /** A metric's value: flags as 是/否 (yes/no), enum values as they are, numbers with the unit. */
  value(metric, v) {
    if (typeof v === "boolean" || metric?.type === "bool") return this.t(v ? "bool.true" : "bool.false");
    if (typeof v !== "number") return String(v);
    const unit = metric?.unit ?? "";
    // Degrees and percent follow the number closely (42.5°, 95%); other units after a space.
    const gap = unit && !TIGHT_UNITS.has(unit) ? " " : "";
    return `${this.number(v, 2)}${gap}${unit}`;
  }

  /** The server's "中文 / English" one-liner as [this language's part, the other part]. */
  summary(text) {
    const cut = text.indexOf(" / ");
    if (cut < 0) return [text, ""];
    const zh = text.slice(0, cut);
    const en = text.slice(cut + 3);
    return this.lang === "zh" ? [zh, en] : [en, zh];
  }

  /** The city's time zone (the browser's own until the reference data is in). */
  get zone() {
    return this.catalogue.city?.timezone || undefined;
  }

  get locale() {
    return this.lang === "zh" ? "zh-CN" : "en-GB";
  }

  /** An RFC 3339 time shown in the city's time (short: time of day only when today). */
  time(value, { seconds = false } = {}) {
    if (!value) return this.t("kpi.none");
    const when = new Date(value);
    if (Number.isNaN(when.getTime())) return String(value);
    const timeZone = this.zone;
    const day = (d) => d.toLocaleDateString("en-CA", { timeZone });
    const options = { timeZone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    if (seconds) options.second = "2-digit";
    if (day(when) !== day(new Date())) Object.assign(options, { month: "2-digit", day: "2-digit" });
    return when.toLocaleString(this.locale, options);
  }

  number(value, digits = 1) {
    return Number(value).toLocaleString(this.locale, { maximumFractionDigits: digits });
  }

  percent(rate) {
    if (rate === null || rate === undefined) return this.t("kpi.none");
    return `${(rate * 100).toLocaleString(this.locale, { maximumFractionDigits: 1 })}%`;
  }

  set(lang) {
    if (!LANGUAGES.includes(lang) || lang === this.lang) return;
    this.lang = lang;
    this.storage.setItem(STORAGE_KEY, lang);
    for (const listener of this.listeners) listener(lang);
  }

  toggle() {
    this.set(this.lang === "zh" ? "en" : "zh");
  }

  onChange(listener) {
    this.listeners.add(listener);
  }
}

/** A metric's title in `lang` with its unit (倾角 (°)), or null for an unknown metric. */
export function metricLabel(metric, lang) {
  if (!metric) return null;
  const title = metric.title?.[lang] || metric.title?.zh || metric.name;
  return metric.unit ? `${title} (${metric.unit})` : title;
}
