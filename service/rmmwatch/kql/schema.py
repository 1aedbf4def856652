"""Column types of the Advanced Hunting tables rmmwatch can run rules over.

Sources: learn.microsoft.com/defender-xdr/advanced-hunting-deviceprocessevents-table,
advanced-hunting-devicenetworkevents-table and advanced-hunting-devicefilecertificateinfo-table
(KQL ``int`` columns are ``long`` here: one integer type is enough for comparisons and rendering),
plus ``MachineGroup``, which the streaming API adds to every table. Defender keeps adding columns:
decoding ignores unknown keys, and a rule may only use the columns listed here (a typo
in a rule is an error at load time, not a rule that silently never matches).
"""

from __future__ import annotations

from typing import Literal

KqlType = Literal["string", "long", "real", "bool", "datetime", "timespan", "dynamic"]

_STRING = "string"

#: When and where: the first columns of every table.
_DEVICE: dict[str, KqlType] = {"Timestamp": "datetime", "DeviceId": "string", "DeviceName": "string"}

#: The process that started the event, as DeviceProcessEvents and DeviceNetworkEvents both
#: describe it (DeviceProcessEvents adds its logon id and its signature).
_INITIATING_PROCESS: dict[str, KqlType] = {
    "InitiatingProcessSHA1": "string",
    "InitiatingProcessSHA256": "string",
    "InitiatingProcessMD5": "string",
    "InitiatingProcessFileName": "string",
    "InitiatingProcessFileSize": "long",
    "InitiatingProcessVersionInfoCompanyName": "string",
    "InitiatingProcessVersionInfoProductName": "string",
    "InitiatingProcessVersionInfoProductVersion": "string",
    "InitiatingProcessVersionInfoInternalFileName": "string",
    "InitiatingProcessVersionInfoOriginalFileName": "string",
    "InitiatingProcessVersionInfoFileDescription": "string",
    "InitiatingProcessId": "long",
    "InitiatingProcessCommandLine": "string",
    "InitiatingProcessCreationTime": "datetime",
    "InitiatingProcessFolderPath": "string",
    "InitiatingProcessParentFileName": "string",
    "InitiatingProcessParentId": "long",
    "InitiatingProcessParentCreationTime": "datetime",
    "InitiatingProcessAccountDomain": "string",
    "InitiatingProcessAccountName": "string",
    "InitiatingProcessAccountSid": "string",
    "InitiatingProcessAccountUpn": "string",
    "InitiatingProcessAccountObjectId": "string",
    "InitiatingProcessIntegrityLevel": "string",
    "InitiatingProcessTokenElevation": "string",
    "InitiatingProcessSessionId": "long",
    "IsInitiatingProcessRemoteSession": "bool",
    "InitiatingProcessRemoteSessionDeviceName": "string",
    "InitiatingProcessRemoteSessionIP": "string",
    "InitiatingProcessUniqueId": "string",
}

#: The report an event came in and its container: in both event tables.
_REPORT: dict[str, KqlType] = {"ReportId": "long", "AppGuardContainerId": "string", "AdditionalFields": "dynamic"}

DEVICE_PROCESS_EVENTS: dict[str, KqlType] = {
    **_DEVICE,
    "ActionType": "string",
    "FileName": "string",
    "FolderPath": "string",
    "SHA1": "string",
    "SHA256": "string",
    "MD5": "string",
    "FileSize": "long",
    "ProcessVersionInfoCompanyName": "string",
    "ProcessVersionInfoProductName": "string",
    "ProcessVersionInfoProductVersion": "string",
    "ProcessVersionInfoInternalFileName": "string",
    "ProcessVersionInfoOriginalFileName": "string",
    "ProcessVersionInfoFileDescription": "string",
    "ProcessId": "long",
    "ProcessCommandLine": "string",
    "ProcessIntegrityLevel": "string",
    "ProcessTokenElevation": "string",
    "ProcessCreationTime": "datetime",
    "AccountDomain": "string",
    "AccountName": "string",
    "AccountSid": "string",
    "AccountUpn": "string",
    "AccountObjectId": "string",
    "LogonId": "long",
    **_INITIATING_PROCESS,
    "InitiatingProcessLogonId": "long",
    "InitiatingProcessSignerType": "string",
    "InitiatingProcessSignatureStatus": "string",
    **_REPORT,
    "CreatedProcessSessionId": "long",
    "IsProcessRemoteSession": "bool",
    "ProcessRemoteSessionDeviceName": "string",
    "ProcessRemoteSessionIP": "string",
    "ProcessUniqueId": "string",
    "MachineGroup": "string",
}

DEVICE_NETWORK_EVENTS: dict[str, KqlType] = {
    **_DEVICE,
    "ActionType": "string",
    "RemoteIP": "string",
    "RemotePort": "long",
    "RemoteUrl": "string",
    "LocalIP": "string",
    "LocalPort": "long",
    "Protocol": "string",
    "LocalIPType": "string",
    "RemoteIPType": "string",
    **_INITIATING_PROCESS,
    **_REPORT,
    # Listed last by the reference since 2026 ("located inside AdditionalFields" says its text,
    # yet it is a column of its own, spelled LogonID unlike DeviceProcessEvents' LogonId).
    "LogonID": "long",
    "MachineGroup": "string",
}

DEVICE_FILE_CERTIFICATE_INFO: dict[str, KqlType] = {
    **_DEVICE,
    "SHA1": "string",
    "IsSigned": "bool",
    "SignatureType": "string",
    "Signer": "string",
    "SignerHash": "string",
    "Issuer": "string",
    "IssuerHash": "string",
    "CertificateSerialNumber": "string",
    "CrlDistributionPointUrls": "string",
    "CertificateCreationTime": "datetime",
    "CertificateExpirationTime": "datetime",
    "CertificateCountersignatureTime": "datetime",
    "IsTrusted": "bool",
    "IsRootSignerMicrosoft": "bool",
    "ReportId": "long",
    "MachineGroup": "string",
}

#: Advanced Hunting table name -> (streaming API ``category``, columns).
TABLES: dict[str, tuple[str, dict[str, KqlType]]] = {
    "DeviceProcessEvents": ("AdvancedHunting-DeviceProcessEvents", DEVICE_PROCESS_EVENTS),
    "DeviceNetworkEvents": ("AdvancedHunting-DeviceNetworkEvents", DEVICE_NETWORK_EVENTS),
    "DeviceFileCertificateInfo": ("AdvancedHunting-DeviceFileCertificateInfo", DEVICE_FILE_CERTIFICATE_INFO),
}

#: Event identity in this product (docs/semantics.md §3): ReportId is a repeating counter,
#: unique only together with the device and the Timestamp.
IDENTITY_COLUMNS: tuple[str, ...] = ("DeviceId", "DeviceName", "Timestamp", "ReportId")

#: Fields of the triggering event carried in every alert, per table: what an analyst reads
#: first (the device, the time, and what the event was: the process launched, the connection
#: made, the file's signature), as Defender sent them.
TRIGGER_COLUMNS: dict[str, tuple[str, ...]] = {
    "DeviceProcessEvents": (
        "Timestamp",
        "DeviceId",
        "DeviceName",
        "ReportId",
        "ActionType",
        "FileName",
        "FolderPath",
        "SHA1",
        "ProcessVersionInfoCompanyName",
        "ProcessVersionInfoProductName",
        "ProcessVersionInfoOriginalFileName",
        "ProcessCommandLine",
        "ProcessId",
        "AccountDomain",
        "AccountName",
        "AccountUpn",
        "InitiatingProcessFileName",
        "InitiatingProcessCommandLine",
        "InitiatingProcessParentFileName",
    ),
    "DeviceNetworkEvents": (
        "Timestamp",
        "DeviceId",
        "DeviceName",
        "ReportId",
        "ActionType",
        "RemoteUrl",
        "RemoteIP",
        "RemotePort",
        "LocalIP",
        "LocalPort",
        "Protocol",
        "InitiatingProcessFileName",
        "InitiatingProcessFolderPath",
        "InitiatingProcessSHA1",
        "InitiatingProcessVersionInfoCompanyName",
        "InitiatingProcessVersionInfoProductName",
        "InitiatingProcessCommandLine",
        "InitiatingProcessAccountDomain",
        "InitiatingProcessAccountName",
        "InitiatingProcessAccountUpn",
        "InitiatingProcessParentFileName",
    ),
    "DeviceFileCertificateInfo": (
        "Timestamp",
        "DeviceId",
        "DeviceName",
        "ReportId",
        "SHA1",
        "IsSigned",
        "SignatureType",
        "Signer",
        "SignerHash",
        "Issuer",
        "IssuerHash",
        "CertificateSerialNumber",
        "IsTrusted",
        "IsRootSignerMicrosoft",
        "CertificateCreationTime",
        "CertificateExpirationTime",
    ),
}


def distinctive_columns() -> dict[str, str]:
    """Columns that belong to exactly one table, each with that table's name.

    A bare Advanced Hunting row (no ``category``) says its table only through its columns: a row
    carrying ``RemoteUrl`` is a network event, one carrying ``Signer`` a certificate record
    (docs/semantics.md §2). Computed over every table rmmwatch knows, never over the tables of
    the rules loaded: a column shared by two tables identifies neither.
    """
    owners: dict[str, set[str]] = {}
    for table, (_category, columns) in TABLES.items():
        for column in columns:
            owners.setdefault(column, set()).add(table)
    return {column: next(iter(tables)) for column, tables in owners.items() if len(tables) == 1}
