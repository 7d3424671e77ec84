//! spice-captures: the capture corpus and the pcap loader. Filled in by the captures issue.
