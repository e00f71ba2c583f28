/* registry.c - finds the backends: the built-in scalar reference and the GPU
 * modules (dlopen'ed once, never closed: runtimes such as HIP's do not survive
 * dlclose under sanitizers). Auto order: cuda, hip, opencl, ref. */
#define _GNU_SOURCE /* dladdr */
#include "okv_internal.h"
#include "ref_backend.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static okv_backend_slot_t g_slots[OKV_MAX_BACKENDS] = {
    {"cuda", NULL, 0, 0, ""},
    {"hip", NULL, 0, 0, ""},
    {"opencl", NULL, 0, 0, ""},
    {"ref", NULL, 0, 0, ""},
};
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Directory holding this library (modules are installed beside it). */
static void self_dir(char *out, size_t cap)
{
    Dl_info info;
    out[0] = '\0';
    if (dladdr((void *)&self_dir, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        if (slash) {
            size_t n = (size_t)(slash - info.dli_fname);
            if (n >= cap) n = cap - 1;
            memcpy(out, info.dli_fname, n);
            out[n] = '\0';
        }
    }
}

/* Try dir/liboscarkv_backend_<name>.so; returns the handle or NULL (reason kept). */
static void *try_open(const char *dir, const char *name, char *reason, size_t cap)
{
    char path[4096];
    if (dir && dir[0])
        snprintf(path, sizeof path, "%s/liboscarkv_backend_%s.so", dir, name);
    else
        snprintf(path, sizeof path, "liboscarkv_backend_%s.so", name);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        /* keep the first "found but failed" reason over "not found" ones */
        if (why && (reason[0] == '\0' || strstr(reason, "cannot open shared object") != NULL))
            snprintf(reason, cap, "%s", why);
    }
    return h;
}

static void *open_module(const char *name, char *reason, size_t cap)
{
    void *h = NULL;
    const char *env = getenv("OKV_BACKEND_PATH");
    if (env && env[0]) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", env);
        for (char *save = NULL, *dir = strtok_r(buf, ":", &save); dir && !h; dir = strtok_r(NULL, ":", &save))
            h = try_open(dir, name, reason, cap);
    }
    if (!h) {
        char dir[4096];
        self_dir(dir, sizeof dir);
        if (dir[0]) h = try_open(dir, name, reason, cap);
        if (!h && dir[0]) { /* statically linked into an executable in bin/: modules are in ../lib */
            char lib[4096 + 8];
            snprintf(lib, sizeof lib, "%s/../lib", dir);
            h = try_open(lib, name, reason, cap);
        }
    }
    if (!h) h = try_open(NULL, name, reason, cap); /* the system search path */
    return h;
}

static void probe_slot(okv_backend_slot_t *s)
{
    int32_t n = 0;
    char reason[OKV_REASON_MAX] = "";
    okv_status_t st = s->ops->probe(&n, reason, sizeof reason);
    s->available = (st == OKV_SUCCESS && n > 0);
    s->device_count = s->available ? n : 0;
    if (s->available)
        snprintf(s->reason, sizeof s->reason, "%s", reason[0] ? reason : "ok");
    else
        snprintf(s->reason, sizeof s->reason, "unavailable: %.230s", reason[0] ? reason : okv_status_string(st));
}

static void load_all(void)
{
    for (int i = 0; i < OKV_MAX_BACKENDS; ++i) {
        okv_backend_slot_t *s = &g_slots[i];
        if (strcmp(s->name, "ref") == 0) {
            s->ops = okv_ref_backend_ops();
            probe_slot(s);
            continue;
        }
        char reason[OKV_REASON_MAX] = "";
        void *h = open_module(s->name, reason, sizeof reason);
        if (!h) {
            snprintf(s->reason, sizeof s->reason, "unavailable: module not built or not found (%.200s)", reason);
            continue;
        }
        okv_backend_entry_fn entry = NULL;
        *(void **)(&entry) = dlsym(h, OKV_BACKEND_ENTRY_NAME);
        const okv_backend_ops_t *ops = NULL;
        okv_status_t st = entry ? entry(OKV_BACKEND_IFACE_VERSION, &ops) : OKV_ERROR_VERSION_MISMATCH;
        if (st != OKV_SUCCESS || !ops || ops->iface_version != OKV_BACKEND_IFACE_VERSION ||
            ops->struct_size < offsetof(okv_backend_ops_t, caps)) {
            snprintf(s->reason, sizeof s->reason, "unavailable: module rejected interface version %u (%s)",
                     OKV_BACKEND_IFACE_VERSION, entry ? okv_status_string(st) : "no entry point");
            continue;
        }
        s->ops = ops;
        probe_slot(s);
    }
    for (int i = 0; i < OKV_MAX_BACKENDS; ++i)
        okv_log(OKV_LOG_INFO, "backend %s: %s", g_slots[i].name, g_slots[i].reason);
}

const okv_backend_slot_t *okv_registry(int32_t *count)
{
    pthread_once(&g_once, load_all);
    if (count) *count = OKV_MAX_BACKENDS;
    return g_slots;
}

const okv_backend_slot_t *okv_registry_find(const char *name)
{
    const okv_backend_slot_t *s = okv_registry(NULL);
    for (int i = 0; i < OKV_MAX_BACKENDS; ++i)
        if (strcmp(s[i].name, name) == 0) return &s[i];
    return NULL;
}

OKV_API void okv_backend_info_init(okv_backend_info_t *info)
{
    if (!info) return;
    memset(info, 0, sizeof *info);
    info->size = sizeof *info;
}

OKV_API void okv_device_info_init(okv_device_info_t *info)
{
    if (!info) return;
    memset(info, 0, sizeof *info);
    info->size = sizeof *info;
}

OKV_API okv_status_t okv_backend_count(int32_t *count)
{
    if (!count) return OKV_ERROR_NULL_POINTER;
    okv_registry(count);
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_backend_get_info(int32_t index, okv_backend_info_t *info)
{
    if (!info) return OKV_ERROR_NULL_POINTER;
    if (info->size < sizeof *info) return OKV_ERROR_INVALID_ARGUMENT;
    int32_t n = 0;
    const okv_backend_slot_t *s = okv_registry(&n);
    if (index < 0 || index >= n) return OKV_ERROR_INVALID_ARGUMENT;
    snprintf(info->name, sizeof info->name, "%s", s[index].name);
    info->available = s[index].available;
    info->device_count = s[index].device_count;
    snprintf(info->reason, sizeof info->reason, "%s", s[index].reason);
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_device_get_info(const char *backend, int32_t device, okv_device_info_t *info)
{
    if (!backend || !info) return OKV_ERROR_NULL_POINTER;
    if (info->size < sizeof *info) return OKV_ERROR_INVALID_ARGUMENT;
    const okv_backend_slot_t *s = okv_registry_find(backend);
    if (!s) return OKV_ERROR_INVALID_ARGUMENT;
    if (!s->available) return OKV_ERROR_BACKEND_UNAVAILABLE;
    if (device < 0 || device >= s->device_count) return OKV_ERROR_INVALID_ARGUMENT;
    okv_device_info_t tmp;
    okv_device_info_init(&tmp);
    okv_status_t st = s->ops->device_info(device, &tmp);
    if (st == OKV_SUCCESS) *info = tmp;
    return st;
}
