"""The column types of the three tables, written out here column by column.

Proves that every table has exactly the columns and types of Microsoft's reference as
``kql/schema.py`` declares them (the shared ``InitiatingProcess*`` block included): a column
lost, added or retyped while the declarations are rearranged fails here, since this file does
not derive its expectations from the module it checks.
"""

from __future__ import annotations

import pytest

from rmmwatch.kql.schema import (
    DEVICE_FILE_CERTIFICATE_INFO,
    DEVICE_NETWORK_EVENTS,
    DEVICE_PROCESS_EVENTS,
    TABLES,
    KqlType,
)

#: Per table: type -> its columns of that type.
EXPECTED: dict[str, dict[str, set[str]]] = {
    "DeviceProcessEvents": {
        "bool": {"IsInitiatingProcessRemoteSession", "IsProcessRemoteSession"},
        "datetime": {
            "InitiatingProcessCreationTime",
            "InitiatingProcessParentCreationTime",
            "ProcessCreationTime",
            "Timestamp",
        },
        "dynamic": {"AdditionalFields"},
        "long": {
            "CreatedProcessSessionId",
            "FileSize",
            "InitiatingProcessFileSize",
            "InitiatingProcessId",
            "InitiatingProcessLogonId",
            "InitiatingProcessParentId",
            "InitiatingProcessSessionId",
            "LogonId",
            "ProcessId",
            "ReportId",
        },
        "string": {
            "AccountDomain",
            "AccountName",
            "AccountObjectId",
            "AccountSid",
            "AccountUpn",
            "ActionType",
            "AppGuardContainerId",
            "DeviceId",
            "DeviceName",
            "FileName",
            "FolderPath",
            "InitiatingProcessAccountDomain",
            "InitiatingProcessAccountName",
            "InitiatingProcessAccountObjectId",
            "InitiatingProcessAccountSid",
            "InitiatingProcessAccountUpn",
            "InitiatingProcessCommandLine",
            "InitiatingProcessFileName",
            "InitiatingProcessFolderPath",
            "InitiatingProcessIntegrityLevel",
            "InitiatingProcessMD5",
            "InitiatingProcessParentFileName",
            "InitiatingProcessRemoteSessionDeviceName",
            "InitiatingProcessRemoteSessionIP",
            "InitiatingProcessSHA1",
            "InitiatingProcessSHA256",
            "InitiatingProcessSignatureStatus",
            "InitiatingProcessSignerType",
            "InitiatingProcessTokenElevation",
            "InitiatingProcessUniqueId",
            "InitiatingProcessVersionInfoCompanyName",
            "InitiatingProcessVersionInfoFileDescription",
            "InitiatingProcessVersionInfoInternalFileName",
            "InitiatingProcessVersionInfoOriginalFileName",
            "InitiatingProcessVersionInfoProductName",
            "InitiatingProcessVersionInfoProductVersion",
            "MD5",
            "MachineGroup",
            "ProcessCommandLine",
            "ProcessIntegrityLevel",
            "ProcessRemoteSessionDeviceName",
            "ProcessRemoteSessionIP",
            "ProcessTokenElevation",
            "ProcessUniqueId",
            "ProcessVersionInfoCompanyName",
            "ProcessVersionInfoFileDescription",
            "ProcessVersionInfoInternalFileName",
            "ProcessVersionInfoOriginalFileName",
            "ProcessVersionInfoProductName",
            "ProcessVersionInfoProductVersion",
            "SHA1",
            "SHA256",
        },
    },
    "DeviceNetworkEvents": {
        "bool": {"IsInitiatingProcessRemoteSession"},
        "datetime": {"InitiatingProcessCreationTime", "InitiatingProcessParentCreationTime", "Timestamp"},
        "dynamic": {"AdditionalFields"},
        "long": {
            "InitiatingProcessFileSize",
            "InitiatingProcessId",
            "InitiatingProcessParentId",
            "InitiatingProcessSessionId",
            "LocalPort",
            "LogonID",
            "RemotePort",
            "ReportId",
        },
        "string": {
            "ActionType",
            "AppGuardContainerId",
            "DeviceId",
            "DeviceName",
            "InitiatingProcessAccountDomain",
            "InitiatingProcessAccountName",
            "InitiatingProcessAccountObjectId",
            "InitiatingProcessAccountSid",
            "InitiatingProcessAccountUpn",
            "InitiatingProcessCommandLine",
            "InitiatingProcessFileName",
            "InitiatingProcessFolderPath",
            "InitiatingProcessIntegrityLevel",
            "InitiatingProcessMD5",
            "InitiatingProcessParentFileName",
            "InitiatingProcessRemoteSessionDeviceName",
            "InitiatingProcessRemoteSessionIP",
            "InitiatingProcessSHA1",
            "InitiatingProcessSHA256",
            "InitiatingProcessTokenElevation",
            "InitiatingProcessUniqueId",
            "InitiatingProcessVersionInfoCompanyName",
            "InitiatingProcessVersionInfoFileDescription",
            "InitiatingProcessVersionInfoInternalFileName",
            "InitiatingProcessVersionInfoOriginalFileName",
            "InitiatingProcessVersionInfoProductName",
            "InitiatingProcessVersionInfoProductVersion",
            "LocalIP",
            "LocalIPType",
            "MachineGroup",
            "Protocol",
            "RemoteIP",
            "RemoteIPType",
            "RemoteUrl",
        },
    },
    "DeviceFileCertificateInfo": {
        "bool": {"IsRootSignerMicrosoft", "IsSigned", "IsTrusted"},
        "datetime": {
            "CertificateCountersignatureTime",
            "CertificateCreationTime",
            "CertificateExpirationTime",
            "Timestamp",
        },
        "long": {"ReportId"},
        "string": {
            "CertificateSerialNumber",
            "CrlDistributionPointUrls",
            "DeviceId",
            "DeviceName",
            "Issuer",
            "IssuerHash",
            "MachineGroup",
            "SHA1",
            "SignatureType",
            "Signer",
            "SignerHash",
        },
    },
}


def _by_type(columns: dict[str, KqlType]) -> dict[str, set[str]]:
    grouped: dict[str, set[str]] = {}
    for name, kind in columns.items():
        grouped.setdefault(kind, set()).add(name)
    return grouped


@pytest.mark.parametrize("table", sorted(EXPECTED))
def test_each_table_has_exactly_its_reference_columns_with_their_types(table: str) -> None:
    """Every column of the table, and no other, with the type the reference gives it."""
    _category, columns = TABLES[table]
    assert _by_type(columns) == EXPECTED[table]


def test_the_tables_are_the_module_level_declarations_with_their_streaming_categories() -> None:
    """TABLES names each declaration under its Advanced Hunting name and streaming API category."""
    assert TABLES == {
        "DeviceProcessEvents": ("AdvancedHunting-DeviceProcessEvents", DEVICE_PROCESS_EVENTS),
        "DeviceNetworkEvents": ("AdvancedHunting-DeviceNetworkEvents", DEVICE_NETWORK_EVENTS),
        "DeviceFileCertificateInfo": ("AdvancedHunting-DeviceFileCertificateInfo", DEVICE_FILE_CERTIFICATE_INFO),
    }
    assert [len(columns) for _category, columns in TABLES.values()] == [69, 47, 19]
