#ifndef C_HEADWAY_RESOLV_H
#define C_HEADWAY_RESOLV_H

/// A thin C face for glibc's libresolv (res_nsearch/res_nquery and the ns_* parsers), so that Swift
/// never touches `struct __res_state` or the `ns_msg` macros. Every call is blocking and uses its own
/// resolver state, so it is safe on any thread; Headway runs it on a thread pool, never on an event loop.

#define HEADWAY_DNS_MAX_SERVERS 3
#define HEADWAY_DNS_MAX_SEARCH 6

typedef struct {
    /// Name servers as IPv4 dotted quads with ports; none means the system's (or resolv_conf's) servers.
    const char *servers[HEADWAY_DNS_MAX_SERVERS];
    int ports[HEADWAY_DNS_MAX_SERVERS];
    int server_count;
    /// Search domains and ndots replacing the system's; search_count < 0 keeps the system's list.
    const char *search[HEADWAY_DNS_MAX_SEARCH];
    int search_count;
    int ndots;
    /// Per-try timeout in seconds and number of tries; 0 keeps the defaults.
    int timeout_seconds;
    int attempts;
} headway_dns_config;

typedef struct {
    int family;               /* 4 or 6 */
    unsigned char address[16];
    unsigned int ttl;
} headway_dns_record;

/// Results below zero.
enum {
    HEADWAY_DNS_NXDOMAIN = -1,   /* the name does not exist */
    HEADWAY_DNS_NODATA = -2,     /* the name exists but has no record of this type */
    HEADWAY_DNS_TRY_AGAIN = -3,  /* timeout, SERVFAIL, refused: nothing is known */
    HEADWAY_DNS_FAILURE = -4     /* anything else (bad answer, resolver could not start) */
};

/// Resolves `name` for `qtype` (1 = A, 28 = AAAA), applying the search list (and ndots) unless the name
/// ends with a dot. Answers larger than a UDP datagram come over TCP (libresolv retries on truncation),
/// and EDNS0 is requested so that large answers usually fit in one datagram.
///
/// Returns the number of records written to `records` (at most `capacity`; the total in the answer is in
/// `*total`), or a negative HEADWAY_DNS_* code.
int headway_dns_resolve(const char *name, int qtype, const headway_dns_config *config,
                        headway_dns_record *records, int capacity, int *total);

typedef struct {
    unsigned short priority;
    unsigned short weight;
    unsigned short port;
    unsigned int ttl;
    char target[256];
} headway_srv_record;

/// Resolves the SRV records of `name` (e.g. "_http._tcp.web.default.svc.cluster.local"), search list
/// applied as above. Returns the number written to `records`, or a negative HEADWAY_DNS_* code.
int headway_dns_resolve_srv(const char *name, const headway_dns_config *config,
                            headway_srv_record *records, int capacity, int *total);

#endif
