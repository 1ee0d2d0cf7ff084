"""Notification agent: Webex, ServiceNow and Email delivery routed by severity and tier."""
