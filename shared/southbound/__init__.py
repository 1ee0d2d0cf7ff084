"""Southbound REST clients for Cisco Crosswork Network Controller 7.x (CNC) and Cisco Provider
Connectivity Assurance (PCA, formerly Accedian Skylight).

Agents reach the network only through these clients. Every path, body, field name, login and
failure answer used here is one Cisco documents for CNC 7.x and PCA (docs/southbound.md is the
contract, with the sources behind it): CNC's CAS-style ticket-granting login that hands out a
JWT, the topology, performance-metrics and SR-policy RESTCONF trees, the COE SR-policy and
RSVP-TE operations, the NSO proxy (SRv6 policies, L2NM/L3NM intent and TE-service mapping),
the CAT service inventory, and PCA's login, monitored objects, metrics aggregate and alerting
policies. No invented controller leaf is read or written, so the same code runs against a real
CNC/PCA or the built-in lab with only base URLs and credentials changed.

What a controller does not have (a service's SLA tier, its committed bandwidth) comes from the
operators' inventory export (:mod:`shared.inventory`).

Import from the package; the modules are how it reads, not separate APIs:

- ``models``: what agents see (``Node``, ``Link``, ``Topology``, ``VpnService``,
  ``ServiceMapping``, ``SrPolicy``, ``ExplicitPolicy``, ``LinkLoad``, ``LinkMetrics``,
  ``Thresholds``)
- ``http``: the shared HTTP client, login-retry and failure answers (RESTCONF errors)
- ``topology``: CNC's topology folded into CXM's, the index and IGP path over it, ``link_key``
- ``policies``: SR policies read from CNC's lists, and the operation bodies sent
- ``vpn``: L3/L2 VPN services folded from CAT, NSO, the inventory and the topology
- ``steering``: ``steering_share``, the services that stay on a protection policy
- ``cnc``: ``CncClient`` (login, reads, operations, services, steering) and CNC's paths
- ``pca``: ``PcaClient``
- ``wiring``: ``cnc_client``, ``pca_client``, ``service_inventory``, ``southbound_clients``,
  ``SharedRead``
"""

from shared.southbound.cnc import (
    INVENTORY,
    LINK_PM,
    NETWORKS,
    NSO,
    OPERATIONS,
    RSVP_OPS_MODULE,
    RSVP_TUNNELS,
    SR_OPS_MODULE,
    SR_POLICIES,
    SRV6_POLICY,
    SSO_TICKETS,
    TOPOLOGY,
    CncClient,
)
from shared.southbound.http import YANG_JSON
from shared.southbound.models import (
    DEFAULT_CAPACITY_MBPS,
    DEFAULT_IGP_METRIC,
    DEFAULT_SRGB_BASE,
    ExplicitPolicy,
    Link,
    LinkInterface,
    LinkLoad,
    LinkMetrics,
    Node,
    ServiceMapping,
    SrPolicy,
    Thresholds,
    Topology,
    VpnService,
)
from shared.southbound.pca import (
    PCA_DELAY,
    PCA_JITTER,
    PCA_LOSS,
    PCA_OBJECT_TYPE,
    PCA_ROUND_TRIP,
    PCA_VENDOR,
    PcaClient,
)
from shared.southbound.policies import (
    RSVP_PRIORITY,
    SRV6_LOCATOR,
    SRV6_PREFERENCE,
    SRV6_SID_ALGORITHM,
)
from shared.southbound.steering import steering_share
from shared.southbound.topology import fold_topology, link_key
from shared.southbound.vpn import SERVICE_TYPES, TE_MAPPING
from shared.southbound.wiring import (
    SharedRead,
    cnc_client,
    pca_client,
    service_inventory,
    southbound_clients,
)

__all__ = [
    "DEFAULT_CAPACITY_MBPS",
    "DEFAULT_IGP_METRIC",
    "DEFAULT_SRGB_BASE",
    "INVENTORY",
    "LINK_PM",
    "NETWORKS",
    "NSO",
    "OPERATIONS",
    "PCA_DELAY",
    "PCA_JITTER",
    "PCA_LOSS",
    "PCA_OBJECT_TYPE",
    "PCA_ROUND_TRIP",
    "PCA_VENDOR",
    "RSVP_OPS_MODULE",
    "RSVP_PRIORITY",
    "RSVP_TUNNELS",
    "SERVICE_TYPES",
    "SRV6_LOCATOR",
    "SRV6_POLICY",
    "SRV6_PREFERENCE",
    "SRV6_SID_ALGORITHM",
    "SR_OPS_MODULE",
    "SR_POLICIES",
    "SSO_TICKETS",
    "TE_MAPPING",
    "TOPOLOGY",
    "YANG_JSON",
    "CncClient",
    "ExplicitPolicy",
    "Link",
    "LinkInterface",
    "LinkLoad",
    "LinkMetrics",
    "Node",
    "PcaClient",
    "ServiceMapping",
    "SharedRead",
    "SrPolicy",
    "Thresholds",
    "Topology",
    "VpnService",
    "cnc_client",
    "fold_topology",
    "link_key",
    "pca_client",
    "service_inventory",
    "southbound_clients",
    "steering_share",
]
