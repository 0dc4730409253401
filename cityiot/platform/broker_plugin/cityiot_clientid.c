/*
 * cityiot_clientid: a Mosquitto 2.0 plugin (plugin API v5) guarding the platform's client ids.
 *
 * - Basic auth: a client id starting with a reserved prefix (the platform's own clients, e.g.
 *   cityiot-ingest) is refused unless the username is one of the platform's accounts. With
 *   a vendor map, an account listed there must also use a client id "<vendor id>-...".
 *   Anything else is deferred, so password_file still decides for everyone.
 * - Message: a retained PUBLISH on city/+/+/telemetry from anyone but the platform loses its
 *   retain flag: the reading is delivered to subscribers, never kept by the broker.
 *
 * Options (plugin_opt_<name> in mosquitto.conf), see README.md beside this file:
 *   reserved_prefixes  comma list, default "cityiot"
 *   platform_users     comma list, default "cityiot"
 *   vendor_map         file of "username vendor_id" lines; unset: no vendor confinement
 *
 * Build: cc -shared -fPIC -O2 -o cityiot_clientid.so cityiot_clientid.c
 * (headers from Debian's mosquitto-dev and libmosquitto-dev).
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define PLUGIN "cityiot_clientid"

struct account {
	char *username;
	char *vendor;
};

struct list {
	char **items;
	int count;
};

struct state {
	mosquitto_plugin_id_t *id;
	struct list reserved;
	struct list platform;
	char *vendor_map;
	struct account *accounts;
	int account_count;
	/* Refusals are logged at most once a second: a flood must not flood the log too. */
	time_t last_log_s;
	unsigned long suppressed;
};

static void list_free(struct list *l)
{
	for(int i = 0; i < l->count; i++) free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

/* Split a comma list into trimmed, non-empty items. */
static int list_parse(struct list *l, const char *text)
{
	char *copy = strdup(text);
	char *save = NULL;
	if(!copy) return MOSQ_ERR_NOMEM;
	list_free(l);
	for(char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)){
		while(isspace((unsigned char)*tok)) tok++;
		char *end = tok + strlen(tok);
		while(end > tok && isspace((unsigned char)end[-1])) *--end = '\0';
		if(!*tok) continue;
		char **grown = realloc(l->items, sizeof(char *) * (size_t)(l->count + 1));
		if(!grown){
			free(copy);
			return MOSQ_ERR_NOMEM;
		}
		l->items = grown;
		l->items[l->count] = strdup(tok);
		if(!l->items[l->count]){
			free(copy);
			return MOSQ_ERR_NOMEM;
		}
		l->count++;
	}
	free(copy);
	return MOSQ_ERR_SUCCESS;
}

static bool list_has(const struct list *l, const char *s)
{
	for(int i = 0; i < l->count; i++){
		if(!strcmp(l->items[i], s)) return true;
	}
	return false;
}

static bool list_prefixes(const struct list *l, const char *s)
{
	for(int i = 0; i < l->count; i++){
		if(!strncmp(s, l->items[i], strlen(l->items[i]))) return true;
	}
	return false;
}

static void accounts_free(struct account *a, int n)
{
	for(int i = 0; i < n; i++){
		free(a[i].username);
		free(a[i].vendor);
	}
	free(a);
}

static int account_cmp(const void *a, const void *b)
{
	return strcmp(((const struct account *)a)->username, ((const struct account *)b)->username);
}

/* Read the vendor map ("username vendor_id" per line, '#' comments); keep the old one on error. */
static int vendor_map_load(struct state *st)
{
	FILE *f = fopen(st->vendor_map, "r");
	if(!f){
		mosquitto_log_printf(MOSQ_LOG_ERR, PLUGIN ": cannot read vendor_map %s: check the path "
				"and that the broker's user may read it", st->vendor_map);
		return MOSQ_ERR_UNKNOWN;
	}
	struct account *accounts = NULL;
	int count = 0;
	char line[1024];
	int rc = MOSQ_ERR_SUCCESS;
	while(fgets(line, sizeof(line), f)){
		char user[512], vendor[512];
		if(line[0] == '#' || sscanf(line, "%511s %511s", user, vendor) != 2) continue;
		struct account *grown = realloc(accounts, sizeof(*accounts) * (size_t)(count + 1));
		if(!grown){
			rc = MOSQ_ERR_NOMEM;
			break;
		}
		accounts = grown;
		accounts[count].username = strdup(user);
		accounts[count].vendor = strdup(vendor);
		count++;
		if(!accounts[count - 1].username || !accounts[count - 1].vendor){
			rc = MOSQ_ERR_NOMEM;
			break;
		}
	}
	fclose(f);
	if(rc != MOSQ_ERR_SUCCESS){
		accounts_free(accounts, count);
		return rc;
	}
	qsort(accounts, (size_t)count, sizeof(*accounts), account_cmp);
	accounts_free(st->accounts, st->account_count);
	st->accounts = accounts;
	st->account_count = count;
	mosquitto_log_printf(MOSQ_LOG_INFO, PLUGIN ": %d vendor accounts from %s", count, st->vendor_map);
	return MOSQ_ERR_SUCCESS;
}

static const char *vendor_of(const struct state *st, const char *username)
{
	struct account key = {(char *)username, NULL};
	const struct account *found = bsearch(&key, st->accounts, (size_t)st->account_count,
			sizeof(*st->accounts), account_cmp);
	return found ? found->vendor : NULL;
}

static void refused(struct state *st, const char *id, const char *user, const struct mosquitto *client,
		const char *why)
{
	time_t now = time(NULL);
	if(now == st->last_log_s){
		st->suppressed++;
		return;
	}
	st->last_log_s = now;
	mosquitto_log_printf(MOSQ_LOG_WARNING,
			PLUGIN ": refused client id '%s' for user '%s' from %s: %s (%lu more refusals not logged)",
			id, user ? user : "(anonymous)", mosquitto_client_address(client), why, st->suppressed);
	st->suppressed = 0;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct state *st = userdata;
	const char *id = mosquitto_client_id(ed->client);
	const char *user = ed->username;
	(void)event;

	if(!id) return MOSQ_ERR_PLUGIN_DEFER;
	if(user && list_has(&st->platform, user)) return MOSQ_ERR_PLUGIN_DEFER;
	if(list_prefixes(&st->reserved, id)){
		refused(st, id, user, ed->client, "this client id is reserved for the platform's accounts");
		return MOSQ_ERR_AUTH;
	}
	if(user && st->vendor_map){
		const char *vendor = vendor_of(st, user);
		size_t n = vendor ? strlen(vendor) : 0;
		if(vendor && (strncmp(id, vendor, n) || id[n] != '-')){
			refused(st, id, user, ed->client, "a vendor's client id must start with its vendor id and '-'");
			return MOSQ_ERR_AUTH;
		}
	}
	/* Not ours to accept: the password file (or the next plugin) decides. */
	return MOSQ_ERR_PLUGIN_DEFER;
}

/* True for city/<vendor>/<device>/telemetry (exactly four levels). */
static bool is_telemetry(const char *topic)
{
	if(strncmp(topic, "city/", 5)) return false;
	const char *a = strchr(topic + 5, '/');
	if(!a || a == topic + 5) return false;
	const char *b = strchr(a + 1, '/');
	if(!b || b == a + 1) return false;
	return !strcmp(b + 1, "telemetry");
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	struct state *st = userdata;
	(void)event;

	if(!ed->retain || !ed->topic || !is_telemetry(ed->topic)) return MOSQ_ERR_SUCCESS;
	const char *user = mosquitto_client_username(ed->client);
	if(user && list_has(&st->platform, user)) return MOSQ_ERR_SUCCESS;
	/* A reading is news once: kept, it would reach every new subscriber as a live one. */
	ed->retain = false;
	return MOSQ_ERR_SUCCESS;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	struct state *st = userdata;
	(void)event;
	(void)event_data;
	if(st->vendor_map) vendor_map_load(st);
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

static void state_free(struct state *st)
{
	list_free(&st->reserved);
	list_free(&st->platform);
	free(st->vendor_map);
	accounts_free(st->accounts, st->account_count);
	free(st);
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	struct state *st = calloc(1, sizeof(*st));
	int rc;
	if(!st) return MOSQ_ERR_NOMEM;
	st->id = identifier;
	if(list_parse(&st->reserved, "cityiot") || list_parse(&st->platform, "cityiot")){
		state_free(st);
		return MOSQ_ERR_NOMEM;
	}
	for(int i = 0; i < option_count; i++){
		const char *key = options[i].key, *value = options[i].value ? options[i].value : "";
		if(!strcmp(key, "reserved_prefixes")){
			rc = list_parse(&st->reserved, value);
		}else if(!strcmp(key, "platform_users")){
			rc = list_parse(&st->platform, value);
		}else if(!strcmp(key, "vendor_map")){
			free(st->vendor_map);
			st->vendor_map = *value ? strdup(value) : NULL;
			rc = (*value && !st->vendor_map) ? MOSQ_ERR_NOMEM : MOSQ_ERR_SUCCESS;
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR, PLUGIN ": unknown option plugin_opt_%s: the options "
					"are reserved_prefixes, platform_users and vendor_map", key);
			rc = MOSQ_ERR_INVAL;
		}
		if(rc){
			state_free(st);
			return rc;
		}
	}
	if(st->vendor_map && (rc = vendor_map_load(st))){
		state_free(st);
		return rc;
	}
	if((rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, st))
			|| (rc = mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, st))
			|| (rc = mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, st))){
		state_free(st);
		return rc;
	}
	*userdata = st;
	mosquitto_log_printf(MOSQ_LOG_INFO, PLUGIN ": %d reserved prefixes, %d platform users, vendor "
			"confinement %s", st->reserved.count, st->platform.count, st->vendor_map ? "on" : "off");
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct state *st = userdata;
	(void)options;
	(void)option_count;
	if(!st) return MOSQ_ERR_SUCCESS;
	mosquitto_callback_unregister(st->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(st->id, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(st->id, MOSQ_EVT_RELOAD, on_reload, NULL);
	state_free(st);
	return MOSQ_ERR_SUCCESS;
}
