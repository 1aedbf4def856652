"""The bundled rule set: every rule loads, and each one matches its tool's events and nothing near them.

The vectors are written here from the facts each rule's description cites (company names, code-signing
subjects, service domains), in the Advanced Hunting row shape of the rule's table. Each goes the way a
real event goes: a streaming-API envelope with the table's ``category``, decoded and matched by the
``Detector`` with EVERY bundled rule loaded (so a positive must match its own rule and no other tool's),
then summarised by ``Hunt``. The near misses are the ones ``has`` and host names invite: a longer term,
a look-alike domain (``<host>.evil.example``, ``<host>-login.example``, ``my<domain>``), a URL whose path
or query names the host, another product of the same vendor, the vendor's website.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from rmmwatch.events import Detector
from rmmwatch.hunt import Hunt
from rmmwatch.kql.datetimes import format_datetime
from rmmwatch.model import BatchResult
from rmmwatch.rules import Rule, bundled_rule_paths, load_rules
from rmmwatch.synthetic import Generator, GeneratorConfig
from tests.helpers import MINUTE, T0, row

ALL = load_rules()
BY_NAME = {rule.source.removeprefix("bundled:"): rule for rule in ALL}
NETSUPPORT = BY_NAME["netsupport"]
README = Path(__file__).resolve().parents[2] / "README.md"

CATEGORY = {
    "DeviceProcessEvents": "AdvancedHunting-DeviceProcessEvents",
    "DeviceNetworkEvents": "AdvancedHunting-DeviceNetworkEvents",
    "DeviceFileCertificateInfo": "AdvancedHunting-DeviceFileCertificateInfo",
}
KIND_TABLE = {
    "createproc": "DeviceProcessEvents",
    "filesig": "DeviceFileCertificateInfo",
    "netconn": "DeviceNetworkEvents",
}
BROWSERS = ("chrome.exe", "msedge.exe", "firefox.exe")

_reports = itertools.count(70_000)

# -- rows in the Advanced Hunting shape of each table ------------------------------------------


def process_row(company: str = "", **columns: Any) -> dict[str, Any]:
    """A DeviceProcessEvents row: the created process carries ``company``; the parent is explorer."""
    out = row(
        company=company,
        command='"C:\\Users\\jdoe\\Downloads\\tool.exe"',
        parent="explorer.exe",
        FileName="tool.exe",
        FolderPath="C:\\Users\\jdoe\\Downloads\\tool.exe",
        ProcessVersionInfoProductName="",
        ProcessVersionInfoFileDescription="",
        ProcessVersionInfoOriginalFileName="",
        InitiatingProcessVersionInfoCompanyName="Microsoft Corporation",
    )
    out.update(columns)
    return out


def network_row(url: str, initiating: str = "agent.exe", **columns: Any) -> dict[str, Any]:
    """A DeviceNetworkEvents row: ``initiating`` connected to ``url`` (an FQDN or a URL)."""
    out: dict[str, Any] = {
        "Timestamp": format_datetime(T0),
        "DeviceId": "dev-1",
        "DeviceName": "dev-1.corp.example",
        "ActionType": "ConnectionSuccess",
        "RemoteIP": "203.0.113.10",
        "RemotePort": 443,
        "RemoteUrl": url,
        "LocalIP": "10.1.2.3",
        "LocalPort": 50123,
        "Protocol": "Tcp",
        "LocalIPType": "Private",
        "RemoteIPType": "Public",
        "InitiatingProcessSHA1": "0d1f6e2b3c4a5968778695a4b3c2d1e0f9a8b7c6",
        "InitiatingProcessSHA256": None,
        "InitiatingProcessMD5": "5e0a1b2c3d4e5f60718293a4b5c6d7e8",
        "InitiatingProcessFileName": initiating,
        "InitiatingProcessFileSize": 5_242_880,
        "InitiatingProcessVersionInfoCompanyName": "",
        "InitiatingProcessVersionInfoProductName": "",
        "InitiatingProcessId": 4242,
        "InitiatingProcessCommandLine": f'"{initiating}"',
        "InitiatingProcessCreationTime": format_datetime(T0 - MINUTE),
        "InitiatingProcessFolderPath": f"c:\\program files\\vendor\\{initiating}",
        "InitiatingProcessParentFileName": "services.exe",
        "InitiatingProcessParentId": 700,
        "InitiatingProcessAccountDomain": "nt authority",
        "InitiatingProcessAccountName": "system",
        "InitiatingProcessAccountSid": "S-1-5-18",
        "InitiatingProcessAccountUpn": None,
        "InitiatingProcessIntegrityLevel": "System",
        "InitiatingProcessTokenElevation": "TokenElevationTypeDefault",
        "ReportId": next(_reports),
        "AppGuardContainerId": "",
        "AdditionalFields": None,
    }
    out.update(columns)
    return out


def certificate_row(signer: str, **columns: Any) -> dict[str, Any]:
    """A DeviceFileCertificateInfo row: a file signed by ``signer``."""
    out: dict[str, Any] = {
        "Timestamp": format_datetime(T0),
        "DeviceId": "dev-1",
        "DeviceName": "dev-1.corp.example",
        "SHA1": "9b2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d",
        "IsSigned": True,
        "SignatureType": "Embedded",
        "Signer": signer,
        "SignerHash": "e5abe8d3cea37b45f3d3896b49fb91920b4a4e9d",
        "Issuer": "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1",
        "IssuerHash": "7b0f360b775f76c94a12ca48445aa2d2a875701c",
        "CertificateSerialNumber": "0300319d7627de429659a08315d579b5",
        "CrlDistributionPointUrls": '["http://crl3.digicert.com/DigiCertTrustedG4CodeSigningRSA4096SHA3842021CA1.crl"]',
        "CertificateCreationTime": "2025-01-23T00:00:00Z",
        "CertificateExpirationTime": "2026-02-12T23:59:59Z",
        "CertificateCountersignatureTime": format_datetime(T0 - 30 * MINUTE),
        "IsTrusted": True,
        "IsRootSignerMicrosoft": False,
        "ReportId": next(_reports),
    }
    out.update(columns)
    return out


def envelope(table: str, *rows: dict[str, Any]) -> bytes:
    """An Event Hubs message body holding ``rows`` as records of ``table``."""
    return orjson.dumps(
        {
            "records": [
                {
                    "time": r["Timestamp"],
                    "tenantId": "00000000-0000-0000-0000-000000000001",
                    "operationName": "Publish",
                    "category": CATEGORY[table],
                    "properties": r,
                }
                for r in rows
            ]
        }
    )


# -- the vectors: (positives, near misses) per rule file ----------------------------------------
# Positives are rows; near misses are rows the rule must not match. For network rules a string is a
# RemoteUrl reached by the tool's own process (not a browser).

P = process_row
C = certificate_row


def N(url: str, initiating: str = "agent.exe") -> dict[str, Any]:
    return network_row(url, initiating)


VECTORS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "netsupport": (
        [P("NetSupport Ltd", FileName="client32.exe"), P("NETSUPPORT LTD.", FileName="client32.exe")],
        [P("NetSupportive Health Systems"), P("MyNetSupport Inc")],
    ),
    # AnyDesk
    "rmm_anydesk_createproc": (
        [P("AnyDesk Software GmbH", FileName="AnyDesk.exe"), P("philandro Software GmbH", FileName="AnyDesk.exe")],
        [P("AnyDeskSoftware GmbH"), P("MyAnyDesk Software GmbH"), P("AnyDesk Softwares GmbH")],
    ),
    "rmm_anydesk_filesig": (
        [C("AnyDesk Software GmbH"), C("philandro Software GmbH")],
        [C("AnyDesk Softwareentwicklung GmbH"), C("philandroSoftware GmbH")],
    ),
    "rmm_anydesk_netconn": (
        [
            N("relay-3a9f0c1e.net.anydesk.com", "AnyDesk.exe"),
            N("boot.net.anydesk.com", "AnyDesk.exe"),
            N("api.playanext.com", "AnyDesk.exe"),
            N("https://relay-3a9f0c1e.net.anydesk.com/", "AnyDesk.exe"),
        ],
        [N("anydesk.com"), N("www.anydesk.com"), N("download.anydesk.com"), N("xnet.anydesk.com")],
    ),
    # TeamViewer
    "rmm_teamviewer_createproc": (
        [P("TeamViewer Germany GmbH", FileName="TeamViewer.exe"), P("TeamViewer GmbH", FileName="TeamViewer.exe")],
        [P("Team Viewer Ltd"), P("MyTeamViewer Tools Ltd")],
    ),
    "rmm_teamviewer_filesig": (
        [C("TeamViewer Germany GmbH"), C("TeamViewer")],
        [C("TeamViewers Ltd"), C("Team Viewer GmbH")],
    ),
    "rmm_teamviewer_netconn": (
        [N("router15.teamviewer.com", "TeamViewer_Service.exe"), N("master7.teamviewer.com", "TeamViewer.exe")],
        [
            N("www.teamviewer.com"),
            N("download.teamviewer.com"),
            N("master7.teamviewer.community"),
            N("https://evil.example/master7.teamviewer.com"),
        ],
    ),
    # Splashtop
    "rmm_splashtop_createproc": (
        [P("Splashtop Inc.", FileName="SRService.exe")],
        [P("Splashtops Inc."), P("Splashtop2 Inc.")],
    ),
    "rmm_splashtop_filesig": ([C("Splashtop Inc.")], [C("Splashtop2 Inc"), C("MySplashtop Ltd")]),
    "rmm_splashtop_netconn": (
        [
            N("st-v3-univ-srs-win-3800.api.splashtop.com", "SRService.exe"),
            N("sr-relay-1.relay.splashtop.com", "SRFeature.exe"),
            N("eu-1.api.splashtop.eu", "SRService.exe"),
            N("https://st2-v3-dc.api.splashtop.com/api/fulong/v1", "SRService.exe"),
        ],
        [N("www.splashtop.com"), N("splashtop.com"), N("xapi.splashtop.com")],
    ),
    # Atera
    "rmm_atera_createproc": (
        [P("Atera Networks Ltd", FileName="AteraAgent.exe"), P("ATERA Networks", FileName="AteraAgent.exe")],
        [P("Ateranetworks Ltd"), P("Atera Network Services")],
    ),
    "rmm_atera_filesig": ([C("Atera Networks Ltd")], [C("Atera Networking Ltd")]),
    "rmm_atera_netconn": (
        [
            N("agent-api.atera.com", "AteraAgent.exe"),
            N("pubsub.atera.com", "AteraAgent.exe"),
            N("atera-agent-heartbeat.servicebus.windows.net", "AteraAgent.exe"),
            N("https://agenthb.atera.com/api/v3/heartbeat", "AteraAgent.exe"),
        ],
        [N("app.atera.com"), N("www.atera.com"), N("xagent-api.atera.com"), N("other.servicebus.windows.net")],
    ),
    # ConnectWise ScreenConnect
    "rmm_screenconnect_createproc": (
        [
            P("ScreenConnect Software", FileName="ScreenConnect.ClientService.exe"),
            P("ConnectWise, LLC", FileName="ScreenConnect.WindowsClient.exe"),
        ],
        [P("ScreenConnector Ltd"), P("ConnectWiser Inc")],
    ),
    "rmm_screenconnect_filesig": ([C("ConnectWise, LLC"), C("ConnectWise, Inc.")], [C("ConnectWisely GmbH")]),
    "rmm_screenconnect_netconn": (
        [
            N("instance-k3d9x2-relay.screenconnect.com", "ScreenConnect.ClientService.exe"),
            N("acme.screenconnect.com", "ScreenConnect.ClientService.exe"),
            N("control.connectwise.com", "ScreenConnect.ClientService.exe"),
            N("https://acme.screenconnect.com/Bin/ScreenConnect.ClientSetup.exe", "powershell.exe"),
        ],
        [N("home.connectwise.com"), N("myscreenconnect.com")],
    ),
    # SimpleHelp
    "rmm_simplehelp_createproc": (
        [P("SimpleHelp Ltd", FileName="Remote Access.exe")],
        [P("SimpleHelpdesk Ltd"), P("Simple Help Ltd")],
    ),
    "rmm_simplehelp_filesig": ([C("SimpleHelp Ltd")], [C("Simple Help Ltd"), C("SimpleHelpers Inc")]),
    # Action1
    "rmm_action1_createproc": (
        [P("Action1 Corporation", FileName="action1_agent.exe")],
        [P("Action10 Corp"), P("Action Corporation")],
    ),
    "rmm_action1_filesig": ([C("Action1 Corporation")], [C("Action12 LLC")]),
    "rmm_action1_netconn": (
        [
            N("server.action1.com", "action1_agent.exe"),
            N("a1-backend-packages.s3.amazonaws.com", "action1_agent.exe"),
            N("https://app.eu.action1.com/agent/connect", "action1_agent.exe"),
        ],
        [N("myaction1.com"), N("other-bucket.s3.amazonaws.com")],
    ),
    # MeshCentral
    "rmm_meshcentral_createproc": (
        [
            P(
                "",
                FileName="MeshAgent.exe",
                ProcessVersionInfoProductName="MeshCentral Agent",
                ProcessVersionInfoFileDescription="MeshCentral Background Service Agent",
            ),
            P("", FileName="meshagent64.exe", ProcessVersionInfoFileDescription="MeshCentral Background Service Agent"),
        ],
        [P("", ProcessVersionInfoProductName="MeshCentralized Backup"), P("MeshCentral Ltd")],
    ),
    # RustDesk
    "rmm_rustdesk_createproc": (
        [
            P("Purslane Ltd", FileName="rustdesk.exe", ProcessVersionInfoFileDescription="RustDesk Remote Desktop"),
            P("", FileName="rustdesk.exe", ProcessVersionInfoFileDescription="RustDesk"),
        ],
        [P("Purslanes Ltd"), P("", ProcessVersionInfoFileDescription="RustDeskHelper")],
    ),
    "rmm_rustdesk_netconn": (
        [N("rs-ny.rustdesk.com", "rustdesk.exe"), N("rs-sg.rustdesk.com", "rustdesk.exe")],
        [N("rustdesk.com"), N("www.rustdesk.com"), N("https://evil.example/?rs-ny.rustdesk.com")],
    ),
    # Tactical RMM
    "rmm_tacticalrmm_createproc": (
        [
            P("AmidaWare LLC", FileName="tacticalrmm.exe", ProcessVersionInfoProductName="Tactical RMM Agent"),
            P("AmidaWare Inc", FileName="tacticalrmm.exe"),
        ],
        [P("Amida Ware LLC"), P("", ProcessVersionInfoProductName="TacticalRMMX Agent")],
    ),
    # Level
    "rmm_level_filesig": ([C("Level Software, Inc.")], [C("NextLevel Software Inc"), C("Level Softwares Inc")]),
    "rmm_level_netconn": (
        [
            N("agents.level.io", "level.exe"),
            N("online.level.io", "level.exe"),
            N("https://builds.level.io/windows/level.exe", "powershell.exe"),
        ],
        [N("level.io"), N("www.level.io"), N("docs.level.io")],
    ),
    # N-able
    "rmm_nable_createproc": (
        [P("N-able Take Control", FileName="BASupSrvc.exe"), P("N-able Technologies Ltd", FileName="agent.exe")],
        [P("Turn-able Inc"), P("Unable Software Ltd")],
    ),
    "rmm_nable_filesig": ([C("N-ABLE TECHNOLOGIES LTD")], [C("N-able Technology Ltd")]),
    "rmm_nable_netconn": (
        [
            N("upload3.system-monitor.com", "winagent.exe"),
            N("remote.management", "winagent.exe"),
            N("comserver.corporate.beanywhere.com", "BASupSrvc.exe"),
            N("swi-tc.com", "BASupSrvc.exe"),
            N("https://upload1.am.remote.management/", "winagent.exe"),
        ],
        [N("n-able.com"), N("www.n-able.com"), N("notremote.management")],
    ),
    # Kaseya
    "rmm_kaseya_filesig": ([C("Kaseya Holdings Inc."), C("Kaseya Limited")], [C("Kaseyas Ltd"), C("MyKaseya Inc")]),
    "rmm_kaseya_netconn": (
        [
            N("acme.kaseya.net", "AgentMon.exe"),
            N("managedsupport.kaseya.net", "KaUsrTsk.exe"),
            N("deploy01.kaseya.com", "powershell.exe"),
        ],
        [N("www.kaseya.com"), N("kaseya.com"), N("helpdesk.kaseya.com")],
    ),
    # Syncro
    "rmm_syncro_createproc": ([P("Servably, Inc.", FileName="Syncro.Service.exe")], [P("Servability Inc")]),
    "rmm_syncro_filesig": ([C("Servably, Inc."), C("Servably Inc.")], [C("Servability Inc")]),
    "rmm_syncro_netconn": (
        [
            N("acme.syncromsp.com", "Syncro.Service.exe"),
            N("rmm.syncroapi.com", "Syncro.Service.exe"),
            N("app.kabuto.io", "Syncro.Overmind.Service.exe"),
            N("production.kabutoservices.com", "Syncro.Service.exe"),
            N("attachments.servably.com", "Syncro.App.Runner.exe"),
        ],
        [N("notsyncromsp.com"), N("kabuto.io.example")],
    ),
    # Zoho Assist
    "rmm_zohoassist_createproc": (
        [P("Zoho Corporation", FileName="ZohoURS.exe"), P("ZOHO Corp", FileName="zaservice.exe")],
        [P("Zoho Corporation", FileName="ZohoMail.exe"), P("ZohoCorp", FileName="zaservice.exe")],
    ),
    "rmm_zohoassist_netconn": (
        [
            N("gateway.zohoassist.com", "ZohoURS.exe"),
            N("assist.zoho.com", "ZohoURS.exe"),
            N("downloads.zohoassist.jp", "zaservice.exe"),
        ],
        [N("mail.zoho.com"), N("zoho.com"), N("myzohoassist.com")],
    ),
    # GoTo / LogMeIn
    "rmm_goto_createproc": (
        [
            P("LogMeIn, Inc.", FileName="LogMeIn.exe", ProcessVersionInfoOriginalFileName="LogMeIn.exe"),
            P("GoTo, Inc.", FileName="GoToAssist.exe", ProcessVersionInfoOriginalFileName="g2ax_customer.exe"),
        ],
        [P("GoToMyCloud Inc"), P("LogMeInX Ltd")],
    ),
    "rmm_goto_netconn": (
        [
            N("secure.logmein.com", "LogMeIn.exe"),
            N("rescue-list.eu.logmein-gateway.com", "lmi_rescue.exe"),
            N("secure.logmeinrescue.com", "lmi_rescue.exe"),
            N("express.gotoassist.com", "g2ax_customer.exe"),
            N("https://secure.logmeinrescue.com/Customer/Download.aspx", "powershell.exe"),
        ],
        [N("logmeininc.com"), N("global.gotomeeting.com"), N("mylogmein.com")],
    ),
    # Remote Utilities
    "rmm_remoteutilities_createproc": (
        [P("Remote Utilities Pte. Ltd.", FileName="rutserv.exe"), P("Remote Utilities LLC", FileName="rfusclient.exe")],
        [P("Remote Utility Ltd"), P("Remote-Utilities Ltd")],
    ),
    "rmm_remoteutilities_filesig": (
        [C("REMOTE UTILITIES PTE. LTD."), C("Remote Utilities LLC")],
        [C("Remote-Utilities LLC"), C("RemoteUtilities LLC")],
    ),
    "rmm_remoteutilities_netconn": (
        [N("id4.internetid.ru", "rutserv.exe"), N("update.remoteutilities.com", "rutserv.exe")],
        [N("myinternetid.ru"), N("internetid.ru.example")],
    ),
    # PDQ
    "rmm_pdq_createproc": (
        [P("PDQ.com", FileName="PDQDeployConsole.exe"), P("PDQ.com Corporation", FileName="PDQDeployRunner-1.exe")],
        [P("PDQ Software Inc"), P("PDQ.community Tools")],
    ),
    "rmm_pdq_filesig": ([C("PDQ.com Corporation")], [C("PDQ Corporation"), C("XPDQ.com Corporation")]),
    "rmm_pdq_netconn": (
        [N("app.pdq.com", "pdq-connect-agent.exe"), N("cfcdn.pdq.com", "pdq-connect-updater.exe")],
        [N("www.pdq.com"), N("pdq.com"), N("xapp.pdq.com")],
    ),
    # Ammyy Admin
    "rmm_ammyy_createproc": (
        [
            P("", FileName="AA_v3.exe", ProcessVersionInfoFileDescription="Ammyy Admin"),
            P("Ammyy LLC", FileName="aa.exe"),
        ],
        [P("", ProcessVersionInfoFileDescription="Ammyyy Admin"), P("Ammyyx LLC")],
    ),
    "rmm_ammyy_filesig": ([C("Ammyy LLC")], [C("Ammyyy LLC")]),
    "rmm_ammyy_netconn": (
        [
            N("rl.ammyy.com", "AA_v3.exe"),
            N("ammyy.com", "AA_v3.exe"),
            N("https://ammyy.com/files/AA_v3.exe", "powershell.exe"),
        ],
        [N("notammyy.com"), N("ammyy.co")],
    ),
    # AeroAdmin
    "rmm_aeroadmin_createproc": ([P("AeroAdmin LLC", FileName="AeroAdmin.exe")], [P("AeroAdministration LLC")]),
    "rmm_aeroadmin_filesig": ([C("AeroAdmin LLC"), C("Aeroadmin LLC")], [C("AeroAdmins LLC")]),
    "rmm_aeroadmin_netconn": (
        [N("auth11.aeroadmin.com", "AeroAdmin.exe"), N("auth.aeroadmin.com", "AeroAdmin.exe")],
        [N("aeroadmin.com"), N("www.aeroadmin.com"), N("auth11.aeroadmin.co")],
    ),
    # DWService
    "rmm_dwservice_filesig": ([C("DWSNET OÜ"), C("DWSNET srl")], [C("DWSNETWORK Ltd")]),
    "rmm_dwservice_netconn": (
        [N("node123.dwservice.net", "dwagsvc.exe"), N("https://www.dwservice.net/dw/agent", "dwagent.exe")],
        [N("mydwservice.net"), N("dwservice.network")],
    ),
    # NinjaOne
    "rmm_ninjaone_createproc": (
        [P("NinjaRMM, LLC", FileName="NinjaRMMAgent.exe"), P("NinjaOne, LLC", FileName="NinjaRMMAgent.exe")],
        [P("NinjaTrader LLC"), P("NinjaRMMAgent Ltd")],
    ),
    "rmm_ninjaone_filesig": ([C("NinjaRMM, LLC"), C("NinjaOne LLC")], [C("Ninja One LLC")]),
    "rmm_ninjaone_netconn": (
        [
            N("app.ninjarmm.com", "NinjaRMMAgent.exe"),
            N("eu.ninjarmm.com", "NinjaRMMAgent.exe"),
            N("agent.rmmservice.eu", "NinjaRMMAgent.exe"),
            N("https://app.ninjaone.com/agent/installer", "NinjaRMMAgentPatcher.exe"),
        ],
        [N("ninjatrader.com"), N("myninjarmm.com")],
    ),
    # Datto RMM
    "rmm_dattormm_netconn": (
        [
            N("concord.centrastage.net", "CagService.exe"),
            N("vidal-cc.centrastage.net", "CagService.exe"),
            N("merlot.rmm.datto.com", "AEMAgent.exe"),
            N("https://zinfandel.rmm.datto.com/api/v2", "CagService.exe"),
        ],
        [N("datto.com"), N("www.datto.com"), N("backup.datto.com")],
    ),
    # BeyondTrust Remote Support (Bomgar)
    "rmm_beyondtrust_filesig": (
        [C("Bomgar Corporation")],
        # BeyondTrust's own name signs its privilege-management agents too, so it is not matched.
        [C("BeyondTrust Corporation"), C("Bomgars Inc")],
    ),
    "rmm_beyondtrust_netconn": (
        [
            N("support.acme.beyondtrustcloud.com", "bomgar-scc.exe"),
            N("acme.bomgarcloud.com", "bomgar-scc.exe"),
            N("license.bomgar.com", "bomgar-scc.exe"),
        ],
        [N("www.beyondtrust.com"), N("beyondtrust.com"), N("www.bomgar.com")],
    ),
    # Pulseway
    "rmm_pulseway_createproc": ([P("MMSOFT Design Ltd.", FileName="PCMonitorSrv.exe")], [P("MMSOFT Designs Ltd")]),
    "rmm_pulseway_filesig": ([C("MMSOFT Design Ltd.")], [C("MM SOFT Design Ltd.")]),
    "rmm_pulseway_netconn": (
        [N("acme.pulseway.com", "PCMonitorSrv.exe"), N("api.pulseway.com", "PCMonitorSrv.exe")],
        [N("mypulseway.com")],
    ),
    # RemotePC
    "rmm_remotepc_createproc": (
        [P("IDrive Inc", FileName="RemotePCService.exe"), P("IDrive, Inc.", FileName="RemotePC.exe")],
        # IDrive's backup software carries the same company.
        [P("IDrive Inc", FileName="id_service.exe"), P("IDriveSafe Inc", FileName="RemotePC.exe")],
    ),
    "rmm_remotepc_netconn": (
        [N("static.remotepc.com", "RemotePCService.exe"), N("web1.remotedesktop.com", "RemotePCService.exe")],
        [N("myremotepc.com"), N("remotepc.co")],
    ),
    # Supremo
    "rmm_supremo_filesig": ([C("Nanosystems S.r.l.")], [C("Nano Systems Srl"), C("NanosystemsLab Srl")]),
    "rmm_supremo_netconn": (
        [N("hs1.supremocontrol.com", "SupremoService.exe"), N("supremocontrol.com", "Supremo.exe")],
        [N("mysupremocontrol.com")],
    ),
    # UltraViewer
    "rmm_ultraviewer_createproc": (
        [
            P("DucFabulous Co,ltd", FileName="UltraViewer_Desktop.exe"),
            P("DucFabulous", FileName="UltraViewer_Service.exe"),
        ],
        [P("Duc Fabulous Co")],
    ),
    "rmm_ultraviewer_filesig": ([C("DUC FABULOUS CO.,LTD")], [C("DucFabulous")]),
    "rmm_ultraviewer_netconn": (
        [N("ultraviewer.net", "UltraViewer_Desktop.exe"), N("api.ultraviewer.net", "UltraViewer_Service.exe")],
        [N("myultraviewer.net")],
    ),
    # ISL Online
    "rmm_islonline_createproc": (
        [P("XLAB d.o.o.", FileName="ISLLight.exe"), P("ISL Online Ltd.", FileName="ISLLightClient.exe")],
        [P("XLABS d.o.o."), P("ISLOnline Ltd")],
    ),
    "rmm_islonline_filesig": ([C("ISL Online Ltd.")], [C("ISLOnline Ltd")]),
    "rmm_islonline_netconn": (
        [N("grid.islonline.net", "ISLLight.exe"), N("www.islonline.com", "ISLLightClient.exe")],
        [N("myislonline.net")],
    ),
    # Radmin
    "rmm_radmin_createproc": (
        [
            P("Famatech Corp.", FileName="rserver3.exe", ProcessVersionInfoProductName="Radmin Server"),
            P("Famatech Corp.", FileName="Radmin.exe", ProcessVersionInfoProductName="Radmin Viewer"),
        ],
        # Famatech's network scanner is not a remote-control tool.
        [P("Famatech Corp.", ProcessVersionInfoProductName="Advanced IP Scanner")],
    ),
    # NetSupport (beside the bundled process rule)
    "rmm_netsupport_filesig": (
        [C("NetSupport Ltd"), C("NETSUPPORT LTD.")],
        [C("NetSupportive Health Systems"), C("MyNetSupport Inc")],
    ),
    "rmm_netsupport_netconn": (
        [
            N("geo.netsupportsoftware.com", "client32.exe"),
            N("https://activation.netsupportsoftware.com/", "client32.exe"),
        ],
        [N("netsupportmanager.com"), N("mynetsupportsoftware.com")],
    ),
}

#: The network rules that exclude a browser visiting the vendor's web pages (their domains serve
#: websites or consoles too); the relay-only rules keep browser connections.
BROWSER_EXCLUDED = {
    "rmm_screenconnect_netconn",
    "rmm_action1_netconn",
    "rmm_nable_netconn",
    "rmm_kaseya_netconn",
    "rmm_syncro_netconn",
    "rmm_zohoassist_netconn",
    "rmm_goto_netconn",
    "rmm_remoteutilities_netconn",
    "rmm_pdq_netconn",
    "rmm_ammyy_netconn",
    "rmm_dwservice_netconn",
    "rmm_ninjaone_netconn",
    "rmm_dattormm_netconn",
    "rmm_beyondtrust_netconn",
    "rmm_pulseway_netconn",
    "rmm_remotepc_netconn",
    "rmm_supremo_netconn",
    "rmm_ultraviewer_netconn",
    "rmm_islonline_netconn",
    "rmm_netsupport_netconn",
}


def _table(name: str) -> str:
    return BY_NAME[name].query.table


def _host_lookalikes(url: str) -> list[str]:
    """Hosts that contain a matching host name but belong to someone else."""
    return [f"{url}.evil.example", f"{url}-login.example", f"https://evil.example/?next={url}"]


def _near_misses(name: str) -> Iterator[dict[str, Any]]:
    positives, negatives = VECTORS[name]
    yield from negatives
    if _table(name) == "DeviceNetworkEvents":
        for positive in positives:
            url = positive["RemoteUrl"]
            if "/" not in url:
                for lookalike in _host_lookalikes(url):
                    yield network_row(lookalike, positive["InitiatingProcessFileName"])


def _run(rules: list[Rule], table: str, *rows: dict[str, Any], engine: str = "auto") -> BatchResult:
    result = Detector(rules, prefilter_engine=engine).process([envelope(table, *rows)])
    assert result.problems == [], result.problems
    return result


def _vector_id(name: str, vector: dict[str, Any]) -> str:
    columns = ("RemoteUrl", "Signer", "ProcessVersionInfoCompanyName", "ProcessVersionInfoFileDescription")
    value = next((vector[c] for c in columns if vector.get(c)), vector.get("ProcessVersionInfoProductName"))
    return f"{name}:{value}"


POSITIVES = [(name, vector) for name in VECTORS for vector in VECTORS[name][0]]
NEAR_MISSES = [(name, vector) for name in VECTORS for vector in _near_misses(name)]

# -- the rule files ------------------------------------------------------------------------------


def test_every_bundled_rule_loads_and_has_vectors_here() -> None:
    """All bundled rules compile; each has positive vectors and near misses below, and nothing else does."""
    names = {spec.removeprefix("bundled:") for spec in bundled_rule_paths()}
    assert names == set(BY_NAME) == set(VECTORS)
    for name in names:
        positives, negatives = VECTORS[name]
        assert positives and negatives, name


def test_the_set_covers_at_least_25_tools_over_the_three_tables() -> None:
    """At least 25 tools, and rules on each of the three tables."""
    tools = {name.split("_")[1] for name in BY_NAME if name.startswith("rmm_")}
    assert len(tools) >= 25, sorted(tools)
    assert {rule.query.table for rule in ALL} == set(CATEGORY)


def test_ids_are_unique_version_4_uuids() -> None:
    """Every id is its own uuid4 (load_rules also refuses a duplicate)."""
    ids = [rule.id for rule in ALL]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(rule_id).version == 4 for rule_id in ids)


@pytest.mark.parametrize("name", sorted(n for n in BY_NAME if n.startswith("rmm_")))
def test_each_rule_file_has_the_shape_of_its_table(name: str) -> None:
    """File name and table agree; the seed's window and aggregates; the Sentinel metadata; cited sources."""
    rule = BY_NAME[name]
    kind = name.rsplit("_", 1)[1]
    assert rule.query.table == KIND_TABLE[kind]
    assert rule.query.window == NETSUPPORT.query.window  # now(-5d) .. now()
    assert rule.query.group_by[:2] == ("DeviceId", "DeviceName")
    assert [a.name for a in rule.query.aggregates][:3] == ["FirstSeen", "LastSeen", "Report"]
    assert rule.query.aggregates[-1].name == "Count"
    assert rule.tactics == ("CommandAndControl",)
    assert rule.techniques == ("T1219",)
    assert rule.severity == "Medium"
    assert rule.name.startswith("Remote Management and Monitoring tool - ")
    sources = re.findall(r"^- (https://\S+)$", rule.description.split("Sources:\n", 1)[1], re.MULTILINE)
    assert sources, "the facts' sources are cited"
    assert rule.query.required, "a literal the byte prefilter can look for"


def test_the_network_rules_group_by_a_column_their_table_has() -> None:
    """Network rules group by the initiating process (DeviceNetworkEvents has no AccountUpn)."""
    for name, rule in BY_NAME.items():
        if rule.query.table == "DeviceNetworkEvents":
            assert rule.query.group_by == ("DeviceId", "DeviceName", "InitiatingProcessFileName"), name


def test_loading_the_whole_set_takes_well_under_a_second_per_rule() -> None:
    """Loading every bundled rule is not a start-up cost (a 'does not hang' bound, far above the real time)."""
    import time

    started = time.perf_counter()
    assert len(load_rules()) == len(ALL)
    assert time.perf_counter() - started < 30


# -- the vectors, through decode+match and the summary rows ---------------------------------------


@pytest.mark.parametrize(("name", "vector"), POSITIVES, ids=[_vector_id(n, v) for n, v in POSITIVES])
def test_a_positive_matches_its_rule_and_no_other(name: str, vector: dict[str, Any]) -> None:
    """With every bundled rule loaded, the event matches exactly its own rule, and hunt prints its row."""
    rule = BY_NAME[name]
    result = _run(ALL, rule.query.table, vector)
    assert [m.rule.id for m in result.matches] == [rule.id]
    assert result.excluded == []
    hunt = Hunt(ALL)
    hunt.add(result.matches)
    rows = hunt.rows(T0)
    assert len(rows) == 1
    out = rows[0]
    assert out["RuleId"] == rule.id
    assert out["Count"] == 1
    assert out["Report"] == [vector["ReportId"]]
    assert out["FirstSeen"] == out["LastSeen"] == format_datetime(T0)
    for column in rule.query.group_by:
        assert out[column] == vector[column]


@pytest.mark.parametrize(("name", "vector"), POSITIVES, ids=[_vector_id(n, v) for n, v in POSITIVES])
def test_a_positive_matches_in_any_case(name: str, vector: dict[str, Any]) -> None:
    """The identifying value upper-cased still matches (every operator used is case-insensitive)."""
    rule = BY_NAME[name]
    shouted = {k: v.upper() if isinstance(v, str) and k not in ("Timestamp",) else v for k, v in vector.items()}
    assert [m.rule.id for m in _run(ALL, rule.query.table, shouted).matches] == [rule.id]


@pytest.mark.parametrize(("name", "vector"), NEAR_MISSES, ids=[_vector_id(n, v) for n, v in NEAR_MISSES])
def test_a_near_miss_does_not_match_the_rule(name: str, vector: dict[str, Any]) -> None:
    """A longer term, a look-alike host, a URL naming the host elsewhere, a sibling product: no match."""
    rule = BY_NAME[name]
    result = _run(ALL, rule.query.table, vector)
    assert rule.id not in [m.rule.id for m in result.matches]
    assert rule.id not in [e.match.rule.id for e in result.excluded]


def test_the_vendor_in_another_column_matches_nothing() -> None:
    """Only the created process, the signer or the remote host counts: a process started BY a tool
    (its parent's company), a connection by a tool to elsewhere, a certificate whose issuer names a
    vendor, match no bundled rule."""
    companies = [v["ProcessVersionInfoCompanyName"] for n, (ps, _) in VECTORS.items() for v in ps if n.endswith("proc")]
    companies = [c for c in companies if c]
    children = [process_row("Microsoft Corporation", InitiatingProcessVersionInfoCompanyName=c) for c in companies]
    assert _run(ALL, "DeviceProcessEvents", *children).matches == []
    elsewhere = [
        network_row("www.example.com", "AnyDesk.exe", InitiatingProcessVersionInfoCompanyName=c) for c in companies
    ]
    assert _run(ALL, "DeviceNetworkEvents", *elsewhere).matches == []
    signers = [v["Signer"] for n, (ps, _) in VECTORS.items() for v in ps if n.endswith("filesig")]
    issued = [certificate_row("Example Software Ltd", Issuer=f"{s} Code Signing CA") for s in signers]
    assert _run(ALL, "DeviceFileCertificateInfo", *issued).matches == []


@pytest.mark.parametrize("name", sorted(n for n in BY_NAME if n.endswith("_netconn")))
def test_a_browser_is_excluded_only_where_the_domains_serve_web_pages(name: str) -> None:
    """A browser reaching the rule's first host is excluded (and kept for metering) by the rules whose
    domains are also websites or consoles; relay-only rules still count it."""
    rule = BY_NAME[name]
    host = VECTORS[name][0][0]["RemoteUrl"]
    for browser in BROWSERS:
        result = _run(ALL, rule.query.table, network_row(host, browser))
        if name in BROWSER_EXCLUDED:
            assert result.matches == []
            assert [(e.match.rule.id, e.exclusion.name) for e in result.excluded] == [
                (rule.id, "Web browser visiting the vendor's web pages")
            ]
        else:
            assert [m.rule.id for m in result.matches] == [rule.id]
            assert rule.exclusions == ()


def test_goto_meeting_is_excluded_from_the_goto_process_rule() -> None:
    """GoTo's conferencing client carries GoTo's company; it is excluded by its original file name."""
    rule = BY_NAME["rmm_goto_createproc"]
    meeting = process_row("GoTo, Inc.", FileName="g2mstart.exe", ProcessVersionInfoOriginalFileName="G2M.exe")
    result = _run(ALL, "DeviceProcessEvents", meeting)
    assert result.matches == []
    assert [(e.match.rule.id, e.exclusion.name) for e in result.excluded] == [(rule.id, "GoTo Meeting client")]
    bare = _run([r.without_exclusions() for r in ALL], "DeviceProcessEvents", meeting)
    assert [m.rule.id for m in bare.matches] == [rule.id]


def test_the_prefilter_never_changes_a_vector_s_result() -> None:
    """Over every vector, the prefiltered engines give exactly the matches of parsing everything."""
    for engine in ("python", "auto"):
        for name, vector in POSITIVES + NEAR_MISSES:
            table = _table(name)
            reference = _run(ALL, table, vector, engine="off")
            result = _run(ALL, table, vector, engine=engine)
            assert [m.rule.id for m in result.matches] == [m.rule.id for m in reference.matches], (name, engine)
            assert [e.match.rule.id for e in result.excluded] == [e.match.rule.id for e in reference.excluded]


def test_every_rule_leaves_the_netsupport_answer_unchanged_on_the_synthetic_stream() -> None:
    """`make run`'s stream with every bundled rule: NetSupport's rows are exactly those of the NetSupport
    rule alone, and the other RMM tools of the stream's stories are reported by their own rules."""
    ticks = iter(range(T0, T0 + 10**12, 100_000))
    # RMM tools' stories (AnyDesk, TeamViewer, ScreenConnect, Atera ... over the three tables) often enough that a
    # few hundred messages hold each of the four below.
    config = GeneratorConfig(
        seed=11, devices=300, netsupport_ratio=0.01, netsupport_devices=30, decoy_ratio=0.01, rmm_ratio=0.02
    )
    messages = list(Generator(config, clock=lambda: next(ticks)).messages(400))
    now = T0 + 10 * MINUTE

    def rows(rules: list[Rule]) -> list[dict[str, Any]]:
        hunt = Hunt(rules)
        hunt.add(Detector(rules).process(messages).matches)
        return hunt.rows(now)

    everything = rows(ALL)
    alone = rows([NETSUPPORT])
    assert alone, "the stream has NetSupport episodes"
    assert [{k: v for k, v in r.items() if k != "RuleId"} for r in everything if r["RuleId"] == NETSUPPORT.id] == alone
    reported = {r["RuleId"] for r in everything}
    for tool in ("anydesk", "teamviewer", "screenconnect", "atera"):
        assert BY_NAME[f"rmm_{tool}_createproc"].id in reported, tool


# -- the README table ------------------------------------------------------------------------------


def test_the_readme_table_lists_every_tool_with_its_tables() -> None:
    """README's "Bundled RMM rules" table has one row per tool, naming the tables its rule files cover."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Bundled RMM rules", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.match(r"\| [^|]*\(`(\w+)`\) \| ([^|]+) \|", line)
        if match:
            listed[match.group(1)] = {t.strip() for t in match.group(2).split(",")}
    expected: dict[str, set[str]] = {}
    short = {"createproc": "process", "filesig": "signature", "netconn": "network"}
    for name in BY_NAME:
        if name.startswith("rmm_"):
            _, tool, kind = name.split("_")
            expected.setdefault(tool, set()).add(short[kind])
    expected["netsupport"].add("process")  # bundled:netsupport, the seed
    assert listed == expected
