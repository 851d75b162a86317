#include "CHeadwayResolv.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdlib.h>
#include <string.h>

static int configure(res_state state, const headway_dns_config *config) {
    if (config->server_count > 0) {
        int count = config->server_count < MAXNS ? config->server_count : MAXNS;
        for (int i = 0; i < count; i++) {
            struct sockaddr_in address;
            memset(&address, 0, sizeof address);
            address.sin_family = AF_INET;
            address.sin_port = htons((unsigned short)config->ports[i]);
            if (inet_pton(AF_INET, config->servers[i], &address.sin_addr) != 1) {
                return -1;
            }
            state->nsaddr_list[i] = address;
        }
        state->nscount = count;
    }
    if (config->search_count >= 0) {
        /* The search list points into defdname, as res_ninit itself does. */
        size_t used = 0;
        int kept = 0;
        for (int i = 0; i < config->search_count && i < MAXDNSRCH; i++) {
            size_t length = strlen(config->search[i]) + 1;
            if (used + length > sizeof state->defdname) {
                break;
            }
            memcpy(state->defdname + used, config->search[i], length);
            state->dnsrch[kept++] = state->defdname + used;
            used += length;
        }
        state->dnsrch[kept] = NULL;
        state->ndots = config->ndots > 15 ? 15 : (config->ndots < 0 ? 1 : config->ndots);
    }
    if (config->timeout_seconds > 0) {
        state->retrans = config->timeout_seconds;
    }
    if (config->attempts > 0) {
        state->retry = config->attempts;
    }
    state->options |= RES_USE_EDNS0;
    return 0;
}

/// Runs the query; on success `*answer` (64 KiB, to be freed) holds the reply and the length is returned.
static int query(const char *name, int qtype, const headway_dns_config *config, unsigned char **answer) {
    struct __res_state state;
    memset(&state, 0, sizeof state);
    if (res_ninit(&state) != 0) {
        return HEADWAY_DNS_FAILURE;
    }
    if (configure(&state, config) != 0) {
        res_nclose(&state);
        return HEADWAY_DNS_FAILURE;
    }
    *answer = malloc(65536);
    if (*answer == NULL) {
        res_nclose(&state);
        return HEADWAY_DNS_FAILURE;
    }
    int length = res_nsearch(&state, name, ns_c_in, qtype, *answer, 65536);
    int error = state.res_h_errno;
    res_nclose(&state);
    if (length >= 0) {
        return length;
    }
    free(*answer);
    *answer = NULL;
    switch (error) {
    case HOST_NOT_FOUND: return HEADWAY_DNS_NXDOMAIN;
    case NO_DATA: return HEADWAY_DNS_NODATA;
    case TRY_AGAIN: return HEADWAY_DNS_TRY_AGAIN;
    default: return HEADWAY_DNS_FAILURE;
    }
}

/// Runs the query and opens the reply for the ns_* parsers; on success `*answer` must be freed.
static int query_and_parse(const char *name, int qtype, const headway_dns_config *config,
                           unsigned char **answer, ns_msg *message) {
    int length = query(name, qtype, config, answer);
    if (length < 0) {
        return length;
    }
    if (ns_initparse(*answer, length, message) != 0) {
        free(*answer);
        *answer = NULL;
        return HEADWAY_DNS_FAILURE;
    }
    return 0;
}

int headway_dns_resolve_srv(const char *name, const headway_dns_config *config,
                            headway_srv_record *records, int capacity, int *total) {
    unsigned char *answer = NULL;
    ns_msg message;
    int status = query_and_parse(name, ns_t_srv, config, &answer, &message);
    if (status < 0) {
        return status;
    }
    int written = 0;
    int found = 0;
    int count = ns_msg_count(message, ns_s_an);
    for (int i = 0; i < count; i++) {
        ns_rr record;
        if (ns_parserr(&message, ns_s_an, i, &record) != 0 || ns_rr_type(record) != ns_t_srv || ns_rr_rdlen(record) < 7) {
            continue;
        }
        const unsigned char *data = ns_rr_rdata(record);
        found++;
        if (written < capacity) {
            headway_srv_record *out = &records[written];
            out->priority = (unsigned short)(data[0] << 8 | data[1]);
            out->weight = (unsigned short)(data[2] << 8 | data[3]);
            out->port = (unsigned short)(data[4] << 8 | data[5]);
            out->ttl = ns_rr_ttl(record);
            if (dn_expand(ns_msg_base(message), ns_msg_end(message), data + 6, out->target, sizeof out->target) < 0) {
                found--;
                continue;
            }
            written++;
        }
    }
    free(answer);
    if (total != NULL) {
        *total = found;
    }
    return found == 0 ? HEADWAY_DNS_NODATA : written;
}

int headway_dns_resolve(const char *name, int qtype, const headway_dns_config *config,
                        headway_dns_record *records, int capacity, int *total) {
    unsigned char *answer = NULL;
    ns_msg message;
    int status = query_and_parse(name, qtype, config, &answer, &message);
    if (status < 0) {
        return status;
    }
    int written = 0;
    int found = 0;
    int count = ns_msg_count(message, ns_s_an);
    for (int i = 0; i < count; i++) {
        ns_rr record;
        if (ns_parserr(&message, ns_s_an, i, &record) != 0) {
            continue;
        }
        if (ns_rr_class(record) != ns_c_in || ns_rr_type(record) != qtype) {
            continue;  /* CNAMEs that lead to the answer */
        }
        int size = qtype == ns_t_a ? 4 : 16;
        if (ns_rr_rdlen(record) != size) {
            continue;
        }
        found++;
        if (written < capacity) {
            records[written].family = qtype == ns_t_a ? 4 : 6;
            memcpy(records[written].address, ns_rr_rdata(record), size);
            records[written].ttl = ns_rr_ttl(record);
            written++;
        }
    }
    free(answer);
    if (total != NULL) {
        *total = found;
    }
    return found == 0 ? HEADWAY_DNS_NODATA : written;
}
