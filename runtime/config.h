/* config.h - one table of settings per binary: flag, MAGNETO_* environment variable, YAML file.
 *
 * Each row names a setting once. Its value comes from, in rising precedence: the default, a YAML
 * file named by a MG_CFG_YAML row (given as a flag or environment variable), the environment
 * variable MAGNETO_<NAME> (name upper-cased, '-' and '.' as '_'), and the command-line flag
 * --<name> VALUE or --<name>=VALUE (a bool flag alone means true). Numbers are checked against
 * [min, max] when min <= max. --help prints the table and mg_cfg_parse returns MG_ECANCELED.
 *
 * YAML keys are the row's yaml_key, or its name with '-' as '_'; nested maps are joined with
 * '.', so `kv_cache_config: {free_gpu_memory_fraction: 0.8}` is key
 * "kv_cache_config.free_gpu_memory_fraction". Keys the table does not know are logged and skipped
 * (configs written for other engines carry over); a bad value is an error naming file and line.
 *
 * Strings are copied into memory owned by the table; mg_cfg_free() releases them. String
 * destinations must hold NULL (or a string of an earlier parse of the same table) on entry. */
#ifndef MG_CONFIG_H
#define MG_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef enum mg_cfg_type {
    MG_CFG_INT,    /* dst: int64_t* */
    MG_CFG_DOUBLE, /* dst: double* */
    MG_CFG_BOOL,   /* dst: bool* */
    MG_CFG_STR,    /* dst: char** (owned by the table, NULL when unset) */
    MG_CFG_YAML,   /* dst: char** ; the value is a YAML file whose keys fill the table */
} mg_cfg_type;

typedef struct mg_cfg_opt {
    const char *name; /* flag name without "--" */
    mg_cfg_type type;
    void *dst;
    const char *def; /* default as text; NULL for none */
    double min, max; /* bounds for numbers; ignored when min > max */
    const char *help;
    const char *yaml_key; /* NULL: name with '-' as '_'; "": not read from YAML files */
} mg_cfg_opt;

/* Fill every row's dst from defaults, YAML, environment and argv. Positional arguments and
 * unknown flags are errors. prog and summary head the --help text. */
mg_status mg_cfg_parse(mg_cfg_opt *opts, int n, int argc, char **argv, const char *prog,
                       const char *summary);
void mg_cfg_free(mg_cfg_opt *opts, int n);
void mg_cfg_print_help(const mg_cfg_opt *opts, int n, const char *prog, const char *summary,
                       int fd);

/* Set one row from text, as a flag would. source names where the text came from (for errors). */
mg_status mg_cfg_set(mg_cfg_opt *opt, const char *text, const char *source);

/* A small YAML reader for configuration files: block maps nested by indentation, flow maps on
 * one line ("{a: 1, b: {c: 2}}"), scalars (plain, single- or double-quoted), comments, flow lists
 * and block lists kept as their raw text ("[1, 2]" or "1,2"). Calls cb for every scalar leaf with
 * its dotted key, except plain nulls (null, ~), which leave the setting at its default. Anchors,
 * multi-document streams, flow maps over several lines and multi-line scalars are rejected with an
 * error naming the file and line. */
typedef mg_status (*mg_yaml_cb)(void *ud, const char *key, const char *value, int line);
mg_status mg_yaml_load(const char *path, mg_yaml_cb cb, void *ud);
mg_status mg_yaml_parse(const char *text, const char *name, mg_yaml_cb cb, void *ud);

#endif
