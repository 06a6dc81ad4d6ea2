"""The console's labels in Chinese and English (``TICKETLINE_CONSOLE_LOCALE``, default zh;
each user can switch, kept in a cookie)."""

from __future__ import annotations

LOCALES = ("zh", "en")

LABELS: dict[str, tuple[str, str]] = {
    # key: (zh, en)
    "app": ("Ticketline 运营控制台", "Ticketline operations console"),
    "skip": ("跳到主要内容", "Skip to main content"),
    "nav": ("主导航", "Main navigation"),
    "board": ("看板", "Board"),
    "sla": ("SLA 风险", "SLA risk"),
    "compliance": ("合规与满意度", "Compliance & satisfaction"),
    "quality": ("质量", "Quality"),
    "live": ("实时", "Live"),
    "audit": ("审计", "Audit"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出", "Sign out"),
    "language": ("语言", "Language"),
    "signed_in_as": ("当前用户", "Signed in as"),
    "all_regions": ("全部区域", "all regions"),
    # The roles that may sign in (services/console/auth.py: CONSOLE_ROLES).
    "role_auditor": ("审计", "auditor"),
    "role_regional_center": ("区域中心", "regional center"),
    "role_admin": ("管理员", "admin"),
    "role_dispatcher": ("调度员", "dispatcher"),
    "token": ("访问令牌", "Access token"),
    "token_help": (
        "粘贴 `ticketline token --role auditor --subject 您的名字` 生成的令牌。"
        "可用角色：审计、区域中心、管理员、调度员。",
        "Paste a token from `ticketline token --role auditor --subject you`. "
        "Roles that may sign in: auditor, regional_center, admin, dispatcher.",
    ),
    "sign_in_expired": (
        "登录已过期或令牌无效，请重新登录。",
        "Your sign-in expired or the token is invalid: sign in again.",
    ),
    "token_invalid": ("令牌无效", "The token is not valid"),
    "sign_in_elsewhere": (
        "只能从本控制台的登录页登录。",
        "Sign in from this console's own sign-in page.",
    ),
    "sign_out_elsewhere": (
        "只能从本控制台的页面退出。",
        "Sign out from this console's own pages.",
    ),
    "forbidden": ("无权访问", "Not allowed"),
    "forbidden_detail": (
        "此控制台仅供审计、区域中心、管理员和调度员使用；令牌限定的范围（scope）也须包含此页面。",
        "The console is for auditors, regional centers, admins and dispatchers, with a "
        "token whose scope covers this page.",
    ),
    "unavailable": ("暂时无法使用", "Unavailable"),
    "unavailable_detail": (
        "数据库暂时无法访问，请稍后重试。",
        "The database cannot be reached right now: try again shortly.",
    ),
    "ledger_damaged": ("账本记录损坏", "A stored event is damaged"),
    "ledger_damaged_detail": (
        "此页面读取的某条事件无法解析（被篡改或损坏），未做任何更改。请运行 ticketline verify 查看账本状态。",
        "An event this page reads cannot be decoded (edited or damaged); nothing was changed. "
        "Run `ticketline verify` for the ledger's state.",
    ),
    "not_found": ("未找到", "Not found"),
    "not_found_detail": (
        "该页面或工单不存在，或不在您的可见范围内。",
        "This page or ticket does not exist, or is outside what you may see.",
    ),
    "bad_request": ("请求无效", "Bad request"),
    "bad_request_detail": (
        "请检查地址中的参数（例如月份格式 2026-11）。",
        "Check the address's parameters (e.g. a month like 2026-11).",
    ),
    "back_to_board": ("返回看板", "Back to the board"),
    "filters": ("筛选", "Filters"),
    "region": ("区域", "Region"),
    "service_point": ("服务网点", "Service point"),
    "urgency": ("紧急程度", "Urgency"),
    "any": ("全部", "any"),
    "apply": ("应用", "Apply"),
    "status": ("状态", "Status"),
    "ticket": ("工单", "Ticket"),
    "tickets": ("工单", "tickets"),
    "model": ("型号", "Model"),
    "technician": ("技师", "Technician"),
    "deadline": ("截止时间", "Deadline"),
    "time_left": ("剩余时间", "Time left"),
    "risk": ("风险", "Risk"),
    "risk_breached": ("已超时", "breached"),
    "risk_high": ("高", "high"),
    "risk_medium": ("中", "medium"),
    "risk_low": ("低", "low"),
    "risk_paused": ("已暂停", "paused"),
    "risk_none": ("无时限", "no clock"),
    "more": ("更多", "More"),
    "next_page": ("下一页", "Next page"),
    "first_page": ("第一页", "First page"),
    "none": ("无", "none"),
    "open_tickets": ("未结工单", "Open tickets"),
    "live_updates": ("实时更新已开启", "Live updates on"),
    "received": ("已受理", "received"),
    "diagnosed": ("已诊断", "diagnosed"),
    "dispatched": ("已派工", "dispatched"),
    "visited": ("已上门", "visited"),
    "repaired": ("已维修", "repaired"),
    "followed_up": ("已回访", "followed up"),
    "reopened": ("已重开", "reopened"),
    "closed": ("已关闭", "closed"),
    "normal": ("普通", "normal"),
    "urgent": ("紧急", "urgent"),
    "critical": ("特急", "critical"),
    "timeline": ("事件时间线", "Timeline"),
    "checklist": ("合规检查表", "Compliance checklist"),
    "event": ("事件", "Event"),
    "actor": ("操作人", "Actor"),
    "occurred": ("发生时间", "Occurred"),
    "hash": ("哈希", "Hash"),
    "hash_ok": ("校验通过", "verified"),
    "hash_broken": ("校验失败", "BROKEN"),
    "chain_valid": ("哈希链完整", "Hash chain intact"),
    "chain_broken": ("哈希链损坏", "Hash chain broken"),
    "customer": ("客户", "Customer"),
    "phone": ("电话", "Phone"),
    "address": ("地址", "Address"),
    "item": ("检查项", "Item"),
    "result": ("结果", "Result"),
    "evidence": ("依据事件", "Evidence"),
    "note": ("说明", "Note"),
    "true": ("通过", "yes"),
    "false": ("未通过", "no"),
    "pending": ("待定", "pending"),
    "unknown": ("未知（导入）", "unknown (imported)"),
    "compliant": ("合规", "Compliant"),
    "responded_within_sla": ("按时响应", "Responded within SLA"),
    "resolved_within_sla": ("按时解决", "Resolved within SLA"),
    "visited_before_repair": ("维修前上门", "Visited before repair"),
    "follow_up_done": ("已回访", "Follow-up done"),
    "satisfied": ("客户满意", "Satisfied"),
    "parts_returned": ("旧件已返还", "Parts returned"),
    "steps_in_order": ("流程顺序正确", "Steps in order"),
    "first_time_fix": ("一次修复", "First-time fix"),
    "no_checklist": (
        "尚无检查表（投影尚未处理此工单）。",
        "No checklist yet (the projection has not seen this ticket).",
    ),
    "response": ("响应", "Response"),
    "resolution": ("解决", "Resolution"),
    "breached": ("已超时", "Breached"),
    "at_risk": ("即将到期", "Nearest deadlines"),
    "due_soon": ("4 小时内到期", "Due within 4 h"),
    "per_region": ("按区域", "Per region"),
    "kind": ("类型", "Kind"),
    "month": ("月份", "Month"),
    "group_by": ("分组", "Group by"),
    "compliance_rate": ("合规率", "Compliance rate"),
    "sla_attainment": ("SLA 达成率", "SLA attainment"),
    "first_time_fix_rate": ("一次修复率", "First-time fix rate"),
    "satisfaction_average": ("平均满意度", "Average satisfaction"),
    "nps": ("NPS 净推荐值", "NPS"),
    "complaint_rate": ("投诉率", "Complaint rate"),
    "bands": ("满意度分布", "Satisfaction bands"),
    "very_satisfied": ("非常满意", "very satisfied"),
    "neutral": ("一般", "neutral"),
    "dissatisfied": ("不满意", "dissatisfied"),
    "total": ("合计", "Total"),
    "rates": ("比率（%）", "Rates (%)"),
    "tickets_behind": ("比率背后的工单", "Tickets behind the rate"),
    "rate": ("比率", "Rate"),
    "follow_ups": ("回访数", "Follow-ups"),
    "week": ("周", "Week"),
    "alerts": ("质量预警", "Quality alerts"),
    "alerts_by_group": (
        "按型号和故障类别的预警（近 8 周）",
        "Alerts by model and fault category (last 8 weeks)",
    ),
    "weekly_report": ("周质量报告", "Weekly quality report"),
    "fault_category": ("故障类别", "Fault category"),
    "day": ("日期", "Day"),
    "count": ("数量", "Count"),
    "threshold": ("阈值", "Threshold"),
    "repairs": ("维修数", "Repairs"),
    "live_events": ("实时事件", "Live events"),
    "live_help": (
        "新事件会自动出现在顶部，无需刷新。",
        "New events appear at the top without reloading.",
    ),
    "position": ("序号", "Position"),
    "recorded": ("记录时间", "Recorded"),
    "service": ("服务", "Service"),
    "verify": ("哈希链校验", "Hash-chain verification"),
    "verify_now": ("立即校验", "Verify now"),
    "verify_running": ("校验进行中…", "Verification running…"),
    "verify_never": (
        "本控制台进程尚未运行过校验。",
        "No verification has run in this console process yet.",
    ),
    "verify_ok": ("通过：未发现断链", "OK: no broken link"),
    "verify_failed": ("失败：发现断链", "FAILED: broken links found"),
    "verify_stopped": (
        "中断：校验未完成，请重新运行",
        "STOPPED before the end: run it again",
    ),
    "events_checked": ("已检查事件数", "Events checked"),
    "started_by": ("发起人", "Started by"),
    "started_at": ("开始时间", "Started"),
    "finished_at": ("完成时间", "Finished"),
    "scope": ("范围", "Scope"),
    "checkpoints": ("投影检查点", "Projection checkpoints"),
    "projection": ("投影", "Projection"),
    "checkpoint": ("检查点", "Checkpoint"),
    "lag": ("延迟（事件数）", "Lag (events)"),
    "updated": ("更新时间", "Updated"),
    "ledger_head": ("账本最新序号", "Ledger head"),
    "outbox": ("待发布的发件箱记录", "Outbox rows not yet published"),
    "chart_of": ("图表：", "Chart: "),
    "numbers": ("数值", "Numbers"),
    "no_data": ("暂无数据", "No data"),
    "tickets_count": ("工单数", "Tickets"),
    "quality_scope_note": (
        "质量预警按型号和故障类别统计，不区分区域（与 API 相同）。",
        "Quality alerts count per model and fault category across regions (as the API does).",
    ),
}


# The compliance checklist's notes (services/feedback/compliance.py), by their English text;
# a note not listed (one with figures in it) shows as written.
NOTES: dict[str, tuple[str, str]] = {
    "SLA breached": ("超出服务时限", "SLA breached"),
    "SLA breached before the repair": ("维修前已超出服务时限", "SLA breached before the repair"),
    "after the repair": ("维修之后", "after the repair"),
    "all returned on time": ("均已按时返还", "all returned on time"),
    "awaiting the first response": ("等待首次响应", "awaiting the first response"),
    "awaiting the follow-up": ("等待回访", "awaiting the follow-up"),
    "closed without a follow-up": ("未回访即关闭", "closed without a follow-up"),
    "closed, every step in order": ("已关闭，各步骤顺序正确", "closed, every step in order"),
    "complaint reopened it": ("投诉后重新打开", "complaint reopened it"),
    "dissatisfied or unsolved: reopened": (
        "不满意或未解决：已重新打开",
        "dissatisfied or unsolved: reopened",
    ),
    "fixed the first time": ("一次修复", "fixed the first time"),
    "follow-up without a repair": ("无维修的回访", "follow-up without a repair"),
    "imported: the replaced system recorded no follow-up after the repair": (
        "导入：原系统未记录维修后的回访",
        "imported: the replaced system recorded no follow-up after the repair",
    ),
    "imported: the replaced system's old-part returns are not in the ledger": (
        "导入：原系统的旧件返还不在账本中",
        "imported: the replaced system's old-part returns are not in the ledger",
    ),
    "more than one visit": ("上门多于一次", "more than one visit"),
    "no follow-up yet": ("尚未回访", "no follow-up yet"),
    "no old parts expected back": ("无需返还旧件", "no old parts expected back"),
    "no response before a later event past the deadline": (
        "时限过后仍无响应",
        "no response before a later event past the deadline",
    ),
    "not an on-site repair": ("非上门维修", "not an on-site repair"),
    "not repaired yet": ("尚未维修", "not repaired yet"),
    "not resolved before a later event past the deadline": (
        "时限过后仍未解决",
        "not resolved before a later event past the deadline",
    ),
    "not resolved yet": ("尚未解决", "not resolved yet"),
    "nothing expected back": ("无需返还", "nothing expected back"),
    "on-site repair without a visit": ("上门维修但无到场记录", "on-site repair without a visit"),
    "reopened": ("已重新打开", "reopened"),
    "repaired without a diagnosis": ("未诊断即维修", "repaired without a diagnosis"),
    "satisfied and solved": ("满意且已解决", "satisfied and solved"),
    "resolved after the deadline": ("超时解决", "resolved after the deadline"),
    "resolved in time": ("按时解决", "resolved in time"),
    "responded after the deadline": ("超时响应", "responded after the deadline"),
    "responded in time": ("按时响应", "responded in time"),
    "returned late or overdue": ("返还延迟或逾期", "returned late or overdue"),
    "ticket still open": ("工单仍未关闭", "ticket still open"),
    "unknown (imported)": ("未知（导入）", "unknown (imported)"),
    "visited before the repair": ("维修前已上门", "visited before the repair"),
}

# Notes that end in what they are about (part numbers, an outcome): their start translated.
NOTE_STARTS: dict[str, tuple[str, str]] = {
    "awaiting return of ": ("等待返还：", "awaiting return of "),
    "first repair ": ("首次维修结果：", "first repair "),
}


def translator(locale: str):  # type: ignore[no-untyped-def]
    index = 0 if locale == "zh" else 1

    def t(key: str) -> str:
        pair = LABELS.get(key) or NOTES.get(key)
        if pair:
            return pair[index]
        for start, words in NOTE_STARTS.items():
            if key.startswith(start):
                return words[index] + key[len(start) :]
        return key

    return t
