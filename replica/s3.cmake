# The s3:// ReplicaClient: SigV4 signing, a libcurl wrapper and the S3 client itself, with their
# unit tests and two small tools the black-box tests drive (tests/test_s3_*.py). Included from
# replica/CMakeLists.txt.
find_package(CURL REQUIRED)

set(_s3_dir ${CMAKE_CURRENT_LIST_DIR})

add_library(replica_s3
    ${_s3_dir}/http.cc
    ${_s3_dir}/s3_client.cc
    ${_s3_dir}/s3_etag.cc
    ${_s3_dir}/s3_multipart.cc
    ${_s3_dir}/s3_url.cc
    ${_s3_dir}/s3_xml.cc
    ${_s3_dir}/sigv4.cc
)
target_include_directories(replica_s3 PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(replica_s3 PUBLIC services Threads::Threads
                      PRIVATE CURL::libcurl OpenSSL::Crypto gateway_warnings)

if(GATEWAY_TESTS)
add_executable(replica_s3_test
    ${_s3_dir}/s3_client_test.cc
    ${_s3_dir}/s3_xml_test.cc
    ${_s3_dir}/sigv4_test.cc
)
target_link_libraries(replica_s3_test PRIVATE replica_s3 gateway_warnings GTest::gtest_main)
gtest_discover_tests(replica_s3_test)
endif()

# Prints the SigV4 Authorization header for inputs given on the command line; the botocore
# comparison test (tests/test_s3_sigv4_botocore.py) runs it.
add_executable(sigv4_tool ${_s3_dir}/sigv4_tool.cc)
target_link_libraries(sigv4_tool PRIVATE replica_s3 gateway_warnings)

# Runs one ReplicaClient call against an S3 store; tests/test_s3_replica_client.py drives it.
add_executable(s3_tool ${_s3_dir}/s3_tool.cc)
target_link_libraries(s3_tool PRIVATE replica_s3 gateway_warnings)
