"""Everything about talking to a box, once: SSH config and its failures (`ssh`, `explain`),
running a script there (`transport`), the section protocol (`sections`), the facts a caller
asks for in one round trip (`facts`, `parsers`), shell building blocks (`shell`), the port
chooser (`ports`), the install marker (`marker`) and the agents' address (`address`; what is
known of each server is recorded in `carla_launcher.records`).

Below both `deploy/` and `server/`: imports only the standard library, `nvidia/` and the
package's base modules (proc, errors, fsutil, netaddr, profile, records, state).
"""
