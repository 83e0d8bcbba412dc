# Builds the SQLite amalgamation twice from GATEWAY_SQLITE_DIR:
#   sqlite3_static  linked into the gateway;
#   sqlite3_shared  build/libsqlite3.so.0, the same version for Django processes (LD_LIBRARY_PATH).
# Refuses SQLite older than 3.51.3: 3.7.0 to 3.51.2 have the WAL-reset bug, which can corrupt a
# database when one process commits while another checkpoints (the gateway's exact topology).

set(_sqlite_h "${GATEWAY_SQLITE_DIR}/sqlite3.h")
if(NOT EXISTS "${_sqlite_h}" OR NOT EXISTS "${GATEWAY_SQLITE_DIR}/sqlite3.c")
  message(FATAL_ERROR "No SQLite amalgamation in ${GATEWAY_SQLITE_DIR}: run scripts/setup "
                      "(or scripts/fetch-sqlite .deps) first, or pass -DGATEWAY_SQLITE_DIR=<folder>.")
endif()
file(STRINGS "${_sqlite_h}" _sqlite_version_line REGEX "^#define SQLITE_VERSION_NUMBER ")
string(REGEX REPLACE "^#define SQLITE_VERSION_NUMBER +([0-9]+).*" "\\1" GATEWAY_SQLITE_VERSION_NUMBER
       "${_sqlite_version_line}")
if(GATEWAY_SQLITE_VERSION_NUMBER LESS 3051003)
  message(FATAL_ERROR "SQLite ${GATEWAY_SQLITE_VERSION_NUMBER} in ${GATEWAY_SQLITE_DIR} is older "
                      "than 3.51.3 and has the WAL-reset corruption bug: run scripts/fetch-sqlite.")
endif()
message(STATUS "SQLite amalgamation: ${GATEWAY_SQLITE_VERSION_NUMBER} from ${GATEWAY_SQLITE_DIR}")

# Compile options, each for a reason:
set(GATEWAY_SQLITE_DEFINES
    SQLITE_THREADSAFE=1              # Python's sqlite3 module and our threads share the library
    SQLITE_DEFAULT_WAL_SYNCHRONOUS=1 # NORMAL in WAL mode unless a connection asks otherwise
    SQLITE_ENABLE_FTS5               # what Debian's libsqlite3 offers, so Django apps keep working
    SQLITE_ENABLE_FTS4
    SQLITE_ENABLE_FTS3_PARENTHESIS
    SQLITE_ENABLE_RTREE
    SQLITE_ENABLE_GEOPOLY
    SQLITE_ENABLE_MATH_FUNCTIONS
    SQLITE_ENABLE_COLUMN_METADATA
    SQLITE_ENABLE_DBSTAT_VTAB        # page-level size accounting for the cache budget
    SQLITE_ENABLE_STAT4
    SQLITE_ENABLE_UNLOCK_NOTIFY
    SQLITE_ENABLE_UPDATE_DELETE_LIMIT
    SQLITE_USE_URI=1
    SQLITE_MAX_VARIABLE_NUMBER=250000
    SQLITE_ENABLE_SNAPSHOT           # read-transaction pinning for WAL capture
)

# Compiled once (position-independent) and packaged twice: compiling the 9 MB amalgamation is
# the slowest step of the whole build.
add_library(sqlite3_objects OBJECT "${GATEWAY_SQLITE_DIR}/sqlite3.c")
target_compile_definitions(sqlite3_objects PUBLIC ${GATEWAY_SQLITE_DEFINES})
target_compile_options(sqlite3_objects PRIVATE -w)
set_target_properties(sqlite3_objects PROPERTIES POSITION_INDEPENDENT_CODE ON)

add_library(sqlite3_static STATIC $<TARGET_OBJECTS:sqlite3_objects>)
target_include_directories(sqlite3_static SYSTEM PUBLIC "${GATEWAY_SQLITE_DIR}")
target_compile_definitions(sqlite3_static PUBLIC ${GATEWAY_SQLITE_DEFINES})
target_link_libraries(sqlite3_static PUBLIC Threads::Threads ${CMAKE_DL_LIBS} m)

add_library(sqlite3_shared SHARED $<TARGET_OBJECTS:sqlite3_objects>)
target_link_libraries(sqlite3_shared PRIVATE Threads::Threads ${CMAKE_DL_LIBS} m)
set_target_properties(sqlite3_shared PROPERTIES
    OUTPUT_NAME sqlite3 SOVERSION 0 VERSION 0.8.6
    LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}")
