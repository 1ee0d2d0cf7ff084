-- One database per agent: each agent owns its data (DESIGN.md, Data).
CREATE DATABASE cxm_orchestrator OWNER cxm;
CREATE DATABASE cxm_correlator OWNER cxm;
CREATE DATABASE cxm_impact OWNER cxm;
CREATE DATABASE cxm_path OWNER cxm;
CREATE DATABASE cxm_tunnel OWNER cxm;
CREATE DATABASE cxm_restore OWNER cxm;
CREATE DATABASE cxm_traffic OWNER cxm;
CREATE DATABASE cxm_notify OWNER cxm;
CREATE DATABASE cxm_audit OWNER cxm;
CREATE DATABASE cxm_io OWNER cxm;
