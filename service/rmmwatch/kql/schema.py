"""Column types of the Advanced Hunting tables rmmwatch can run rules over.

Source: learn.microsoft.com/defender-xdr/advanced-hunting-deviceprocessevents-table,
plus ``MachineGroup``, which the streaming API adds. Defender keeps adding columns:
decoding ignores unknown keys, and a rule may only use the columns listed here (a typo
in a rule is an error at load time, not a rule that silently never matches).
"""

from __future__ import annotations

from typing import Literal

KqlType = Literal["string", "long", "real", "bool", "datetime", "timespan", "dynamic"]

_STRING = "string"

DEVICE_PROCESS_EVENTS: dict[str, KqlType] = {
    "Timestamp": "datetime",
    "DeviceId": "string",
    "DeviceName": "string",
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
    "InitiatingProcessAccountDomain": "string",
    "InitiatingProcessAccountName": "string",
    "InitiatingProcessAccountSid": "string",
    "InitiatingProcessAccountUpn": "string",
    "InitiatingProcessAccountObjectId": "string",
    "InitiatingProcessLogonId": "long",
    "InitiatingProcessIntegrityLevel": "string",
    "InitiatingProcessTokenElevation": "string",
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
    "InitiatingProcessParentId": "long",
    "InitiatingProcessParentFileName": "string",
    "InitiatingProcessParentCreationTime": "datetime",
    "InitiatingProcessSignerType": "string",
    "InitiatingProcessSignatureStatus": "string",
    "ReportId": "long",
    "AppGuardContainerId": "string",
    "AdditionalFields": "dynamic",
    "InitiatingProcessSessionId": "long",
    "IsInitiatingProcessRemoteSession": "bool",
    "InitiatingProcessRemoteSessionDeviceName": "string",
    "InitiatingProcessRemoteSessionIP": "string",
    "CreatedProcessSessionId": "long",
    "IsProcessRemoteSession": "bool",
    "ProcessRemoteSessionDeviceName": "string",
    "ProcessRemoteSessionIP": "string",
    "ProcessUniqueId": "string",
    "InitiatingProcessUniqueId": "string",
    "MachineGroup": "string",
}

#: Advanced Hunting table name -> (streaming API ``category``, columns).
TABLES: dict[str, tuple[str, dict[str, KqlType]]] = {
    "DeviceProcessEvents": ("AdvancedHunting-DeviceProcessEvents", DEVICE_PROCESS_EVENTS),
}

#: Event identity in this product (docs/semantics.md §3): ReportId is a repeating counter,
#: unique only together with the device and the Timestamp.
IDENTITY_COLUMNS: tuple[str, ...] = ("DeviceId", "DeviceName", "Timestamp", "ReportId")

#: Fields of the triggering event carried in every alert.
TRIGGER_COLUMNS: tuple[str, ...] = (
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
)
